"""What every `audit-query` admin command shares: its settings, its console, and how it runs and fails."""

import asyncio
import getpass
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console

from audit_query.config import AdminSettings
from audit_query.errors import QueryError
from audit_schemas import Actor

console = Console(stderr=True)
T = TypeVar("T")
SettingsT = TypeVar("SettingsT", bound=AdminSettings)


def _loaded(kind: type[SettingsT]) -> SettingsT:
    """`kind` read from AUDIT_QUERY_*, or a clear error and exit 2."""
    try:
        return kind()
    except ValidationError as e:
        console.print(f"[red]invalid AUDIT_QUERY_* settings:[/red]\n{e}")
        raise typer.Exit(2) from e


def _admin_settings() -> AdminSettings:
    """Only what the admin commands use: they run without the server's cursor secret or OIDC settings."""
    return _loaded(AdminSettings)


def _admin_dsn(settings: AdminSettings) -> str:
    if settings.admin_database_url is None:
        console.print("[red]set AUDIT_QUERY_ADMIN_DATABASE_URL (the owner role) for this command[/red]")
        raise typer.Exit(2)
    return str(settings.admin_database_url)


def _actor(by: str | None) -> Actor:
    return Actor.user(by or getpass.getuser())


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (QueryError, asyncpg.PostgresError, OSError) as e:
        console.print(f"[red]audit-query: {e}[/red]")
        raise typer.Exit(1) from e
