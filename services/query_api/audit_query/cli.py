"""`audit-query`: serve the HTTP API and web UI, and manage API tokens."""

import gc
import os
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from audit_query import logs, selfaudit
from audit_query.auth import Scope, new_secret, secret_hash
from audit_query.cli_subjects import keystore, subjects
from audit_query.cli_support import _actor, _admin_dsn, _admin_settings, _loaded, _run, console
from audit_query.config import Settings
from audit_query.main import create_app, server_config, server_options
from audit_query.repository import TokenAdmin, TokenInfo
from audit_schemas import Action, postgres

app = typer.Typer(help="Audit Trail query API.", no_args_is_help=True)
tokens = typer.Typer(help="Create, list and revoke API tokens (shown once, stored as a hash).", no_args_is_help=True)
app.add_typer(tokens, name="tokens")
app.add_typer(subjects, name="subjects")
app.add_typer(keystore, name="keystore")
_DURATION = re.compile(r"^(\d+)([mhd])$")


def _settings() -> Settings:
    return _loaded(Settings)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default AUDIT_QUERY_HOST)."),
    port: int | None = typer.Option(None, help="Port (default AUDIT_QUERY_PORT)."),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Worker processes sharing the socket (sessions, cursors and live tails work across them).",
    ),
) -> None:
    """Serve the API (OpenAPI docs at /docs), the console at / and its sign-in page at /login."""
    settings = _settings()
    logs.configure(settings.log_level)
    if workers > 1:
        _serve_workers(settings, host or settings.host, port or settings.port, workers)
        return
    config = server_config(create_app(settings), settings, host=host or settings.host, port=port or settings.port)
    # Everything allocated so far (modules, schemas, the grammar, the app) lives as long as the process: moved
    # out of the collector's reach, a full collection no longer walks it in the middle of a request.
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run()


def _serve_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    """Several worker processes under uvicorn's supervisor, each building the app from the same AUDIT_QUERY_*
    environment; `/metrics` adds up every worker's samples through prometheus_client's multiprocess mode (one
    directory of sample files, emptied at start)."""
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir is None:
        metrics_dir = tempfile.mkdtemp(prefix="audit-query-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    for stale in Path(metrics_dir).glob("*.db"):
        stale.unlink()
    options = server_options(settings, host=host, port=port)
    uvicorn.run("audit_query.main:create_app", factory=True, workers=workers, **options)


@tokens.command("create")
def create_token(
    name: str = typer.Option(..., help="What the token is for (shown in lists and in the audit log)."),
    scope: list[Scope] = typer.Option([Scope.READ], help="Scopes; repeat for several."),
    tenant: list[str] = typer.Option([], help="Tenants it may read; repeat for several."),
    all_tenants: bool = typer.Option(False, "--all-tenants", help="Every tenant (platform administrators)."),
    expires_in: str | None = typer.Option(None, help="Lifetime such as 30d, 12h or 90m (default: no expiry)."),
    by: str | None = typer.Option(None, help="Who creates it (default: your login name)."),
) -> None:
    """Create a token and print its secret once, alone on stdout."""
    settings = _admin_settings()
    if all_tenants == bool(tenant):
        console.print("[red]give --tenant (one or more) or --all-tenants[/red]")
        raise typer.Exit(2)
    bad = [t for t in tenant if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", t)]
    if bad:
        console.print(f"[red]not tenant ids: {bad}[/red]")
        raise typer.Exit(2)
    expires = _expiry(expires_in)
    secret = new_secret()
    token_id = uuid4()
    actor = _actor(by)

    async def go() -> None:
        conn = await postgres.connect(_admin_dsn(settings))
        try:
            await TokenAdmin(conn, settings.control_schema).create(
                token_id,
                name,
                secret_hash(secret),
                sorted({s.value for s in scope}),
                None if all_tenants else sorted(set(tenant)),
                actor.id or "unknown",
                expires,
            )
        finally:
            await conn.close()
        start, outcome = selfaudit.events(
            Action.CREATE,
            "api_token",
            str(token_id),
            actor,
            settings.self_audit_tenant,
            {"name": name, "scopes": sorted(s.value for s in scope), "tenants": None if all_tenants else tenant},
        )
        await selfaudit.record(settings, start, outcome)

    _run(go())
    console.print(f"token {token_id} created; its secret is shown once:")
    typer.echo(secret)


@tokens.command("list")
def list_tokens() -> None:
    """Every token with its scopes, tenants and use (never the secrets)."""
    settings = _admin_settings()

    async def go() -> None:
        conn = await postgres.connect(_admin_dsn(settings))
        try:
            rows = await TokenAdmin(conn, settings.control_schema).list()
        finally:
            await conn.close()
        table = Table("id", "name", "scopes", "tenants", "expires", "last used", "revoked")
        for t in rows:
            table.add_row(
                str(t.id),
                t.name,
                " ".join(t.scopes),
                "*" if t.tenants is None else ",".join(t.tenants),
                _when(t.expires_at),
                _when(t.last_used_at),
                _when(t.revoked_at),
            )
        Console().print(table)

    _run(go())


@tokens.command("check")
def check_token() -> None:
    """Read a token's secret on stdin; exit 0 and name it if it is live, 1 if unknown, revoked or expired."""
    settings = _admin_settings()
    secret = sys.stdin.readline().strip()
    if not secret:
        console.print("[red]give the token's secret on stdin[/red]")
        raise typer.Exit(2)

    async def go() -> TokenInfo | None:
        conn = await postgres.connect(_admin_dsn(settings))
        try:
            return await TokenAdmin(conn, settings.control_schema).live(secret_hash(secret))
        finally:
            await conn.close()

    found = _run(go())
    if not isinstance(found, TokenInfo):
        console.print("[red]not a live token (unknown, revoked or expired)[/red]")
        raise typer.Exit(1)
    console.print(f"token {found.id} ({found.name}) is live")


@tokens.command("revoke")
def revoke_token(
    token_id: UUID = typer.Argument(..., help="The token's id (from `tokens list`)."),
    by: str | None = typer.Option(None, help="Who revokes it (default: your login name)."),
) -> None:
    """Revoke a token at once (and every console session opened with it)."""
    settings = _admin_settings()
    actor = _actor(by)

    async def go() -> bool:
        conn = await postgres.connect(_admin_dsn(settings))
        try:
            revoked = await TokenAdmin(conn, settings.control_schema).revoke(token_id, actor.id or "unknown")
        finally:
            await conn.close()
        if revoked is None:
            return False
        start, outcome = selfaudit.events(Action.DELETE, "api_token", str(token_id), actor, settings.self_audit_tenant)
        await selfaudit.record(settings, start, outcome)
        return True

    if not _run(go()):
        console.print(f"[red]no live token {token_id}[/red]")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        console.print(f"[red]--expires-in takes a duration such as 30d, 12h or 90m, not {text!r}[/red]")
        raise typer.Exit(2)
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.now(UTC) + timedelta(**{unit: int(match.group(1))})


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


@app.callback()
def main() -> None:
    """Audit Trail query API."""
