"""`audit-projector`: run the projector, apply migrations, create topics, replay from offset 0, verify."""

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import httpx
import typer
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from audit_projector import logs
from audit_projector.archiving import archive_partitions
from audit_projector.compare import compare, stored_offsets
from audit_projector.config import Settings
from audit_projector.errors import ProjectorError
from audit_projector.integrity import Finding, verify_integrity
from audit_projector.migrations import migrate as run_migrations
from audit_projector.operations import NotTheBlockingRecordError, Selection, request_skip
from audit_projector.operations import redrive as run_redrive
from audit_projector.published import from_file, from_topic
from audit_projector.replay import replay as run_replay
from audit_projector.repository import quoted
from audit_projector.runtime import tune_gc
from audit_projector.scope import ReplayScope
from audit_projector.service import compact_once, serve
from audit_projector.swap import swap as run_swap
from audit_projector.topics import ensure_topics
from audit_projector.witnessing.client import witness_clients
from audit_projector.witnessing.probe import WitnessFinding, probe_witnesses
from audit_schemas import postgres, signing
from audit_schemas.checkpoint import CheckpointError, NoteSigner, NoteVerifier, verifier_key_as

app = typer.Typer(help="Project audit events from Kafka into the Postgres read model.", no_args_is_help=True)
console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as e:
        console.print(f"[red]invalid AUDIT_PROJECTOR_* settings:[/red]\n{e}")
        raise typer.Exit(2) from e


def _owner_dsn(dsn: str | None) -> str:
    """The owner role's DSN, or exit 2 saying how to give it."""
    if dsn is None:
        console.print("[red]no owner DSN: pass --dsn or set AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL[/red]")
        raise typer.Exit(2)
    return dsn


def _trusted_keys(settings: Settings, key: list[str]) -> list[str]:
    """The verifier keys given with --key, else the configured signing key's; exit 2 when there are none."""
    signer_key = settings.signer_key()
    trusted = list(key) or ([NoteSigner.parse(signer_key).verifier_key] if signer_key else [])
    if not trusted:
        console.print("[red]no trusted key: pass --key (the log's verifier key) or configure the signing key[/red]")
        raise typer.Exit(2)
    return trusted


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
    tune_gc()
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
    dsn = _owner_dsn(dsn)
    _run(_migrate(dsn, settings.db_schema, settings.control_schema))


async def _migrate(dsn: str, schema: str, control: str) -> None:
    applied = await run_migrations(dsn, schema, control_schema=control)
    console.print(f"schemas {schema} and {control}: applied {applied or 'nothing (up to date)'}")


@app.command()
def topics() -> None:
    """Create the audit, execution-log, dead-letter and checkpoint topics if they are missing (an admin's job
    when the broker enforces ACLs: run it with the admin principal)."""
    logs.configure()
    settings = _settings()
    names = [settings.audit_topic, settings.execution_log_topic, settings.dead_letter_topic, settings.checkpoint_topic]
    _run(_topics(settings, names))


async def _topics(settings: Settings, names: list[str]) -> None:
    created = await ensure_topics(settings.bootstrap_servers, names, settings.partitions, settings.kafka)
    console.print(f"topics created: {created or 'none (all exist)'}")


@app.command()
def replay(
    schema: str | None = typer.Option(
        None, help="Shadow schema to rebuild into (default audit_replay_<time>); an existing one is resumed."
    ),
    dsn: str | None = typer.Option(None, envvar="AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL", help="Owner role DSN."),
    timeout: float = typer.Option(3600.0, help="Give up after this many seconds (run again to resume)."),
    do_swap: bool = typer.Option(
        False, "--swap/--no-swap", help="Verify the rebuild and swap it in for the live schema (default: leave it)."
    ),
    tenant: str | None = typer.Option(None, help="Investigation: only this tenant's actions."),
    entity: str | None = typer.Option(None, help="Investigation: only this entity's actions, as MODEL/ID."),
    since: datetime | None = typer.Option(None, help="Investigation: only actions started at or after this time."),
    until: datetime | None = typer.Option(None, help="Investigation: only actions started before this time."),
) -> None:
    """Rebuild the read model from offset 0 into a shadow schema while the live projectors keep serving.

    Offsets are stored in the shadow under the live group's name, with each batch: after Ctrl-C or a crash, the
    same command with the same --schema continues from the last committed batch. With --swap, the rebuild is
    compared with the live model, the live projectors are paused while it catches up to their exact offsets,
    the schemas are renamed in one transaction (the old one kept as <live>_retired_<time>) and they resume.
    """
    logs.configure("WARNING")
    live = _settings()
    scope = _scope(tenant, entity, since, until)
    if scope is not None and do_swap:
        console.print("[red]an investigation rebuild (--tenant, --entity, --since, --until) is never swapped in[/red]")
        raise typer.Exit(2)
    kind = "audit_replay" if scope is None else "audit_investigation"
    target = schema or f"{kind}_{datetime.now(UTC):%Y%m%d%H%M%S}"
    dsn = _owner_dsn(dsn)
    if target in (live.db_schema, live.control_schema):
        console.print(f"[red]{target} is the live read model's (or control) schema: replay into a shadow[/red]")
        raise typer.Exit(2)
    settings = _settings(db_schema=target, kafka_group_id=f"audit-replay-{target}")
    tune_gc()

    async def go() -> None:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"replaying into {target}", total=None)
            result = await run_replay(
                settings, dsn, timeout, lambda done, total: bar.update(task, completed=done, total=total), scope
            )
        if scope is not None:
            console.print(f"investigation rebuild of {scope.describe()}")
        for a in result.archived:
            how = "re-read from Kafka and matched" if a.checked_against_log else "deleted by the broker; signed"
            console.print(
                f"{a.topic}/{a.partition}: offsets before {a.end_offset} are archived ({a.end_leaf} leaves, {how}); "
                "skipped"
            )
        rows = result.rows or {}
        console.print(
            f"schema {result.schema}: {result.records} records read"
            + (f" ({result.resumed_from} by an earlier run)" if result.resumed_from else "")
            + f", {result.projected} projected, {result.dead_lettered} dead-lettered in {result.seconds:.1f} s"
            f" ({result.per_second:,.0f} records/s); rows: " + ", ".join(f"{table} {n}" for table, n in rows.items())
        )
        if do_swap:
            with console.status(f"verifying {target} and swapping it in for {live.db_schema}…"):
                swapped = await run_swap(live, settings, dsn, timeout)
            console.print(
                f"swapped: {swapped.live} is now the rebuild ({swapped.rows_verified} rows verified); the old model "
                f"is kept as {swapped.retired}; projectors were paused for {swapped.paused_s * 1000:.0f} ms"
            )

    _run(go())


def _scope(
    tenant: str | None, entity: str | None, since: datetime | None, until: datetime | None
) -> ReplayScope | None:
    """The investigation scope the options describe, or None for a full rebuild; exit 2 on a bad one."""
    if tenant is None and entity is None and since is None and until is None:
        return None
    model, _, entity_id = (entity or "").partition("/")
    if entity is not None and not (model and entity_id):
        console.print("[red]--entity takes MODEL/ID, e.g. resource/res-42[/red]")
        raise typer.Exit(2)
    try:
        return ReplayScope(
            tenant=tenant,
            entity_model=model or None,
            entity_id=entity_id or None,
            since=since if since is None or since.tzinfo else since.replace(tzinfo=UTC),
            until=until if until is None or until.tzinfo else until.replace(tzinfo=UTC),
        )
    except ValidationError as e:
        console.print(f"[red]{e.errors()[0]['msg']}[/red]")
        raise typer.Exit(2) from e


class _RateColumn(ProgressColumn):
    """Records per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} records/s" if task.speed else "… records/s")


@app.command("compact-rollups")
def compact_rollups() -> None:
    """Fold closed days' hourly rollups into the daily tier now (the projector also does it periodically)."""
    logs.configure("WARNING")
    settings = _settings()

    async def go() -> None:
        days = await compact_once(settings)
        console.print("another process is compacting" if days is None else f"{days} day(s) compacted")

    _run(go())


@app.command()
def skip(
    topic: str = typer.Option(..., help="Projected topic of the blocked partition."),
    partition: int = typer.Option(..., min=0, help="Partition number."),
    offset: int = typer.Option(
        ..., min=0, help="Offset of the record to dead-letter (or, with --move-to, to resume at)."
    ),
    reason: str = typer.Option(..., help="Why: kept with the dead letter and the request."),
    move_to: bool = typer.Option(False, "--move-to", help="Move past a range the broker no longer has, to OFFSET."),
    by: str | None = typer.Option(None, help="Operator name recorded with the request (default: database role)."),
    force: bool = typer.Option(
        False, "--force", help="Dead-letter the record at OFFSET although it is not the one blocking the partition."
    ),
) -> None:
    """Unblock a partition: dead-letter the record at OFFSET (the one it is blocked at), or move past a lost range;
    the projector applies it. Exit 2 when OFFSET is not the blocking record."""
    logs.configure("WARNING")
    settings = _settings()

    async def go() -> None:
        console.print(
            await request_skip(settings, topic, partition, offset, reason, move_to=move_to, by=by, force=force)
        )

    try:
        _run(go())
    except typer.Exit as e:
        if isinstance(e.__cause__, NotTheBlockingRecordError):
            raise typer.Exit(2) from e.__cause__
        raise


@app.command()
def redrive(
    reason: str | None = typer.Option(None, help="Only dead letters with this reason."),
    topic: str | None = typer.Option(None, help="Only dead letters from this source topic."),
    partition: int | None = typer.Option(None, min=0, help="… and this partition."),
    offset: int | None = typer.Option(None, min=0, help="… and this offset."),
    all_letters: bool = typer.Option(False, "--all", help="Every dead letter not redriven yet."),
    value_file: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="A fixed record value (one record only); checked before sending."
    ),
    note: str | None = typer.Option(None, help="Why, recorded with each redrive."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be redriven."),
) -> None:
    """Re-publish dead letters to their source topic (once each), unchanged or fixed, and record each redrive."""
    logs.configure("WARNING")
    settings = _settings()
    if not (all_letters or reason or topic is not None):
        console.print("[red]choose what to redrive: --all, --reason, or --topic/--partition/--offset[/red]")
        raise typer.Exit(2)
    selection = Selection(reason, topic, partition, offset)
    value = value_file.read_bytes() if value_file is not None else None

    async def go() -> None:
        done = await run_redrive(settings, selection, value=value, note=note, dry_run=dry_run)
        verb = "would redrive" if dry_run else "redrove"
        for r in done:
            target = "" if dry_run else f" -> {r.topic}/{r.new_partition}@{r.new_offset}"
            console.print(
                f"{verb} {r.topic}/{r.partition}@{r.offset} ({r.reason}){' fixed' if r.fixed else ''}{target}"
            )
        console.print(f"{len(done)} dead letter(s): {verb}")

    _run(go())


@app.command()
def verify(
    integrity: bool = typer.Option(False, "--integrity", help="Recompute the trees and check every row against them."),
    read_model: bool = typer.Option(
        False, "--read-model", help="Rebuild from the log into a scratch schema and compare the live model with it."
    ),
    against: str | None = typer.Option(None, help="With --read-model: compare with this rebuilt schema instead."),
    keep: bool = typer.Option(False, help="With --read-model: keep the scratch schema for inspection."),
    dsn: str | None = typer.Option(None, envvar="AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL", help="Owner role DSN."),
    key: list[str] = typer.Option([], help="Trusted checkpoint verifier key(s); default: the configured signer's."),
    checkpoints: list[Path] = typer.Option(
        [],
        "--checkpoints",
        help="With --integrity: checkpoints kept outside the database (the JSON of GET /v1/checkpoints, JSON "
        "Lines, or one signed note) that the trees must not contradict.",
    ),
    topic: bool = typer.Option(
        True, "--topic/--no-topic", help="With --integrity: hold the trees to the checkpoint topic too (default)."
    ),
    witnesses: bool = typer.Option(
        True,
        "--witnesses/--no-witnesses",
        help="With --integrity: ask each configured witness (AUDIT_PROJECTOR_WITNESSES) what it last cosigned and "
        "report a tree smaller than that, and every witness refusal on record (default).",
    ),
) -> None:
    """Check that the read model is what the log holds: exit 1 naming every altered, inserted or deleted row
    (the first 1,000, with a count of all)."""
    logs.configure("WARNING")
    settings = _settings()
    if integrity == read_model:
        console.print("[red]choose one check: --integrity or --read-model[/red]")
        raise typer.Exit(2)
    dsn = _owner_dsn(dsn)
    if read_model:
        _exit_with(lambda: _verify_read_model(settings, dsn, against, keep))
    trusted = _trusted_keys(settings, key)

    async def go() -> int:
        published = [p for path in checkpoints for p in from_file(path)]
        if topic:  # read before the database's snapshot: every note on it was stored before then
            published += await from_topic(settings.bootstrap_servers, settings.checkpoint_topic, settings.kafka)
        conn = await postgres.connect(dsn, server_settings={"search_path": settings.db_schema})
        witnessed: list[WitnessFinding] = []
        try:
            report = await verify_integrity(
                conn, settings.control_schema, trusted, settings.log_name, published=published
            )
            if witnesses and settings.witnesses:
                async with httpx.AsyncClient(timeout=settings.witness_timeout_s) as http:
                    witnessed, unasked = await probe_witnesses(conn, settings, witness_clients(settings, http))
                for line in unasked:
                    console.print(f"[yellow]{line}[/yellow]", soft_wrap=True)
        finally:
            await conn.close()
        for seen in witnessed:
            report.add(Finding(seen.origin, None, None, None, seen.text))
        console.print(
            f"{report.partitions} partitions, {report.leaves} leaves, {report.rows} rows, {report.checkpoints} "
            f"checkpoints checked; {report.published} published checkpoints held against them"
        )
        for finding in report.findings:
            console.print(f"[red]{finding}[/red]", soft_wrap=True)
        if report.found > len(report.findings):
            console.print(f"[red]… {report.found - len(report.findings)} more findings not listed[/red]")
        if report.found:
            console.print(f"[red]{report.found} finding(s)[/red]")
        return 1 if report.found else 0

    _exit_with(go)


def _exit_with(check: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    try:
        code = asyncio.run(check())
    except (ProjectorError, asyncpg.PostgresError, OSError, CheckpointError) as e:
        console.print(f"[red]audit-projector: {e}[/red]")
        raise typer.Exit(1) from e
    raise typer.Exit(code)


async def _verify_read_model(settings: Settings, dsn: str, against: str | None, keep: bool) -> int:
    """Rebuild (unless `against` names a rebuild) and compare below the offsets both have projected."""
    scratch = against or f"audit_verify_{datetime.now(UTC):%Y%m%d%H%M%S}"
    if against is None:
        shadow = settings.model_copy(update={"db_schema": scratch, "kafka_group_id": f"audit-replay-{scratch}"})
        with console.status(f"rebuilding the log into {scratch}…"):
            await run_replay(shadow, dsn, 3600)
    conn = await postgres.connect(dsn)
    try:
        live_at = await stored_offsets(conn, settings.db_schema, settings.group_id)
        log_at = await stored_offsets(conn, scratch, settings.group_id)
        bounds = {k: min(n, live_at.get(k, 0)) for k, n in log_at.items()}
        for k, n in sorted(log_at.items()):
            if live_at.get(k, 0) < n:
                console.print(f"{k[0]}/{k[1]}: the live model is at offset {live_at.get(k, 0)} of {n}; compared below")
        report = await compare(conn, settings.db_schema, scratch, bounds)
        if against is None and not keep:
            async with conn.transaction():
                await conn.execute(
                    f"""DELETE FROM {quoted(settings.control_schema)}.read_models
                         WHERE schema_oid = (SELECT oid FROM pg_namespace WHERE nspname = $1)""",
                    scratch,
                )
                await conn.execute(f'DROP SCHEMA "{scratch}" CASCADE')
    finally:
        await conn.close()
    console.print(
        f"{report.partitions} partitions' leaves, {report.buckets} day buckets and {report.rows} rows compared "
        f"with the log" + (f" (rebuilt in {scratch}, kept)" if keep or against else "")
    )
    for difference in report.differences:
        console.print(f"[red]{difference}[/red]")
    if not report.differences:
        console.print("the read model matches the log")
    return 1 if report.differences else 0


@app.command("archive")
def archive_command(
    directory: Path = typer.Option(..., "--dir", envvar="AUDIT_PROJECTOR_ARCHIVE_DIR", help="Where archives go."),
    older_than: str = typer.Option(
        ..., help="Archive up to each partition's newest checkpoint older than this (e.g. 90d, 12h, 30m)."
    ),
    dsn: str | None = typer.Option(None, envvar="AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL", help="Owner role DSN."),
    key: list[str] = typer.Option([], help="Trusted checkpoint verifier key(s); default: the configured signer's."),
) -> None:
    """Write each partition's leaves up to a signed checkpoint older than the age into a verified archive, then
    delete their rows. Cut by the log, not the calendar; replay and verify skip archived ranges."""
    logs.configure("WARNING")
    settings = _settings()
    age = _duration(older_than)
    dsn = _owner_dsn(dsn)
    trusted = _trusted_keys(settings, key)

    async def go() -> int:
        conn = await postgres.connect(dsn)
        try:
            done = await archive_partitions(
                conn, settings.db_schema, settings.control_schema, settings.log_name, directory, age, trusted
            )
        finally:
            await conn.close()
        for a in done:
            console.print(
                f"{a.topic}/{a.partition}: leaves {a.first_leaf}..{a.end_leaf - 1} -> {a.path} ({a.bytes} bytes, "
                f"{a.rows_deleted} rows deleted)"
            )
        if not done:
            console.print(f"nothing to archive: no partition has a signed checkpoint older than {older_than}")
        return 0

    _exit_with(go)


def _duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m` or `45s`; exit 2 otherwise."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1:]
    if not number.isdigit() or unit not in units:
        console.print(f"[red]{text!r} is not a duration like 90d, 12h, 30m or 45s[/red]")
        raise typer.Exit(2)
    return timedelta(**{units[unit]: int(number)})


@app.command()
def key(
    generate: bool = typer.Option(False, "--generate", help="Print a new signer key (keep it secret) instead."),
) -> None:
    """Print the checkpoint verifier key (name+hash+key) of the configured signer, for auditors and witnesses."""
    settings = _settings()
    if generate:
        signer, secret = NoteSigner.generate(settings.log_name)
        console.print(f"verifier key (publish it): {signer.verifier_key}")
        typer.echo(secret)
        return
    signer_key = settings.signer_key()
    if signer_key is None:
        console.print("[red]no signing key: set AUDIT_PROJECTOR_CHECKPOINT_KEY_FILE (or _CHECKPOINT_KEY)[/red]")
        raise typer.Exit(2)
    try:
        typer.echo(NoteSigner.parse(signer_key).verifier_key)
    except CheckpointError as e:
        console.print(f"[red]unusable signing key: {e}[/red]")
        raise typer.Exit(1) from e


@app.command("witness-keys")
def witness_keys(
    key: str | None = typer.Option(None, help="The log's verifier key; default: the configured signer's."),
) -> None:
    """Print, for each origin of this log (every partition of each projected topic), the origin and the log's key
    under that name: one `witnessctl add-log` and `add-key` each, for a witness operator."""
    settings = _settings()
    try:
        verifier = key or _trusted_keys(settings, [])[0]
        for topic in settings.topics:
            for partition in range(settings.partitions):
                origin = f"{settings.log_name}/{topic}/{partition}"
                typer.echo(f"{origin} {verifier_key_as(verifier, origin)}")
    except CheckpointError as e:
        console.print(f"[red]unusable key: {e}[/red]")
        raise typer.Exit(2) from e


@app.command("producer-key")
def producer_key(
    verifier_key: str = typer.Option(..., help="The publisher's verifier key (name+hash+base64)."),
    source: list[str] = typer.Option(..., help="Source(s) it may write for; repeat for several."),
    tenant: list[str] = typer.Option([], help="Tenant(s) it may write for (default: every tenant)."),
    valid_from: datetime | None = typer.Option(None, help="From when it is valid (ISO 8601; default now)."),
    valid_until: datetime | None = typer.Option(None, help="Until when (a rotation window's end)."),
    dsn: str | None = typer.Option(None, envvar="AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL", help="Owner role DSN."),
) -> None:
    """Register a publisher's signing key in the projector's key registry."""
    settings = _settings()
    dsn = _owner_dsn(dsn)
    try:
        parsed = NoteVerifier.parse(verifier_key)
    except CheckpointError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    public = parsed.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = signing.key_id(parsed.name, public)
    control = quoted(settings.control_schema)

    async def go() -> None:
        conn = await postgres.connect(dsn)
        try:
            await conn.execute(
                f"""INSERT INTO {control}.producer_keys (key_id, name, public_key, sources, tenants, valid_from,
                                                         valid_until)
                    VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7)""",
                kid,
                parsed.name,
                public,
                list(source),
                list(tenant) or None,
                valid_from.replace(tzinfo=valid_from.tzinfo or UTC) if valid_from else None,
                valid_until.replace(tzinfo=valid_until.tzinfo or UTC) if valid_until else None,
            )
        finally:
            await conn.close()
        console.print(f"registered {kid} for sources {list(source)} and tenants {list(tenant) or 'all'}")

    try:
        asyncio.run(go())
    except (asyncpg.PostgresError, OSError) as e:
        console.print(f"[red]audit-projector: {e}[/red]")
        raise typer.Exit(1) from e
