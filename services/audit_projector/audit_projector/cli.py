"""`audit-projector`: run the projector, apply migrations, create topics, replay from offset 0."""

import asyncio
from datetime import UTC, datetime

import typer
from pydantic import ValidationError
from rich.console import Console

from audit_projector import logs
from audit_projector.config import Settings
from audit_projector.errors import ProjectorError
from audit_projector.migrations import migrate as run_migrations
from audit_projector.replay import replay as run_replay
from audit_projector.service import serve
from audit_projector.topics import ensure_topics

app = typer.Typer(help="Project audit events from Kafka into the Postgres read model.", no_args_is_help=True)
console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as e:
        console.print(f"[red]invalid AUDIT_PROJECTOR_* settings:[/red]\n{e}")
        raise typer.Exit(2) from e


def _run(coro: object) -> None:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except ProjectorError as e:
        console.print(f"[red]audit-projector: {e}[/red]")
        raise typer.Exit(1) from e


@app.command()
def run(
    health_port: int | None = typer.Option(None, help="Serve /healthz and /readyz on this port."),
    log_level: str = typer.Option("INFO", help="Root log level."),
) -> None:
    """Run one projector instance until SIGINT/SIGTERM; start several to share partitions."""
    logs.configure(log_level)
    _run(serve(_settings(health_port=health_port)))


@app.command()
def migrate(
    dsn: str | None = typer.Option(
        None,
        envvar="AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL",
        help="Owner role DSN (the services' roles cannot migrate).",
    ),
    schema: str | None = typer.Option(None, help="Target schema (default AUDIT_PROJECTOR_DB_SCHEMA)."),
) -> None:
    """Apply pending SQL migrations under an advisory lock."""
    logs.configure()
    settings = _settings(db_schema=schema)
    if dsn is None:
        console.print("[red]no owner DSN: pass --dsn or set AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL[/red]")
        raise typer.Exit(2)
    _run(_migrate(dsn, settings.db_schema))


async def _migrate(dsn: str, schema: str) -> None:
    applied = await run_migrations(dsn, schema)
    console.print(f"schema {schema}: applied {applied or 'nothing (up to date)'}")


@app.command()
def topics() -> None:
    """Create the audit, execution-log and dead-letter topics if they are missing."""
    logs.configure()
    settings = _settings()
    names = [settings.audit_topic, settings.execution_log_topic, settings.dead_letter_topic]
    _run(_topics(settings.bootstrap_servers, names, settings.partitions))


async def _topics(bootstrap_servers: str, names: list[str], partitions: int) -> None:
    created = await ensure_topics(bootstrap_servers, names, partitions)
    console.print(f"topics created: {created or 'none (all exist)'}")


@app.command()
def replay(
    schema: str | None = typer.Option(None, help="Fresh schema to rebuild into (default audit_replay_<time>)."),
    dsn: str | None = typer.Option(None, envvar="AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL", help="Owner role DSN."),
    timeout: float = typer.Option(600.0, help="Give up after this many seconds."),
) -> None:
    """Re-read every topic from offset 0 into a fresh schema and report what was rebuilt."""
    logs.configure("WARNING")
    target = schema or f"audit_replay_{datetime.now(UTC):%Y%m%d%H%M%S}"
    if dsn is None:
        console.print("[red]no owner DSN: pass --dsn or set AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL[/red]")
        raise typer.Exit(2)
    settings = _settings(db_schema=target, group_id=f"audit-replay-{target}")

    async def go() -> None:
        with console.status(f"replaying into schema {target}…"):
            result = await run_replay(settings, dsn, timeout)
        console.print(
            f"schema {result.schema}: {result.records} records read, {result.projected} projected, "
            f"{result.dead_lettered} dead-lettered"
        )

    _run(go())
