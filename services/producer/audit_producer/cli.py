"""`audit-producer`: record a single action from the shell, or run the demo service."""

import asyncio
import logging
import signal
import sys

import structlog
import typer
from pydantic import ValidationError
from rich.console import Console

from audit_producer import demo as demo_module
from audit_producer.config import Settings, event_signer
from audit_producer.errors import AuditError
from audit_producer.producer import AuditProducer
from audit_schemas import Actor, ActorType, Entity

app = typer.Typer(help="Publish audit events to Kafka.", no_args_is_help=True)
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        console.print(f"[red]invalid AUDIT_PRODUCER_* settings:[/red]\n{e}")
        raise typer.Exit(2) from e


@app.command()
def emit(
    action: str = typer.Argument(..., help="One of the 13 actions."),
    model: str = typer.Option(..., help="Entity model, e.g. resource."),
    entity_id: str = typer.Option(..., help="Entity id."),
    tenant: str = typer.Option(..., help="Tenant id."),
    actor_type: ActorType = typer.Option(ActorType.USER, help="user, service_account or system."),
    actor_id: str | None = typer.Option(None, help="User or service-account id."),
    actor_name: str | None = typer.Option(None, help="Display name."),
    source: str = typer.Option("audit-producer-cli", help="CloudEvents source."),
) -> None:
    """Record one (already performed) action and print its audit id (alone on stdout, for scripts)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    async def go() -> str:
        async with AuditProducer(source, _settings()) as audit:
            entity = Entity(id=entity_id, model=model)
            actor = Actor(type=actor_type, id=actor_id, display_name=actor_name)
            async with audit.action(action, entity=entity, actor=actor, tenant=tenant) as act:
                return str(act.audit_id)

    try:
        typer.echo(asyncio.run(go()))
    except (AuditError, ValidationError) as e:
        console.print(f"[red]audit-producer: {e}[/red]")
        raise typer.Exit(1) from e


@app.command()
def demo(
    api: str = typer.Option("http://127.0.0.1:8080", help="Query API base URL."),
    tenant: str = typer.Option("demo", help="Tenant to record the actions under."),
    wait: float = typer.Option(60.0, help="Seconds to wait for the read model."),
    token: str | None = typer.Option(None, envvar="AUDIT_DEMO_TOKEN", help="API token to read the results with."),
    history: int = typer.Option(14, min=0, max=90, help="Days of generated history to import (0: none)."),
    public_url: str | None = typer.Option(
        None, envvar="AUDIT_DEMO_PUBLIC_URL", help="The API's address as people reach it, if not --api."
    ),
) -> None:
    """Perform all 13 actions with execution logs, then print the API URLs and a sample from it."""

    async def go() -> None:
        async with AuditProducer("demo-resource-service", _settings()) as audit:
            demo_module.configure_logging(audit)
            ids = await demo_module.perform_all(audit, tenant)
            if history:
                imported = await demo_module.import_history(audit, [tenant, "acme", "globex"], days=history)
                console.print(
                    f"imported {len(imported)} generated actions over the last {history} days (source demo-history)"
                )
        await demo_module.show(api.rstrip("/"), ids, wait, token, public_url=(public_url or api).rstrip("/"))

    try:
        asyncio.run(go())
    except AuditError as e:
        console.print(f"[red]audit-producer: {e}[/red]")
        raise typer.Exit(1) from e


@app.command()
def relay(
    dsn: str = typer.Option(..., envvar="AUDIT_OUTBOX_DSN", help="The service database holding the outbox."),
    schema: str = typer.Option("public", help="Schema of the outbox table."),
    table: str = typer.Option("audit_outbox", help="Outbox table name."),
) -> None:
    """Publish committed outbox rows to Kafka until SIGINT/SIGTERM (one relay leads; others stand by)."""
    try:
        import asyncpg  # only services using the outbox need it
    except ModuleNotFoundError as e:
        console.print(
            "[red]audit-producer relay needs the 'outbox' extra: pip install 'audit-trail-producer[outbox]'[/red]"
        )
        raise typer.Exit(2) from e

    from audit_producer.outbox import OutboxRelay
    from audit_producer.publisher import KafkaPublisher

    settings = _settings()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        publisher = KafkaPublisher(
            settings.bootstrap_servers,
            settings.publish_timeout_s,
            settings.linger_ms,
            event_signer(settings),
            settings.kafka,
        )
        await publisher.start()
        try:
            async with OutboxRelay(dsn, publisher, schema=schema, table=table) as outbox_relay:
                await outbox_relay.run(stop)
                console.print(f"relayed {outbox_relay.published} outbox record(s)")
        finally:
            await publisher.stop()

    try:
        asyncio.run(go())
    except (AuditError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        console.print(f"[red]audit-producer relay: {e}[/red]")
        raise typer.Exit(1) from e
