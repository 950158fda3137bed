"""`audit-query subjects` (erase, hold, release, export, reapply) and `audit-query keystore` (kek, migrate,
rewrap): lawful erasure and the key store, from the command line."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import typer

from audit_query.cli_support import _actor, _admin_dsn, _admin_settings, _run, console
from audit_query.config import AdminSettings
from audit_query.erasure import erase_subject
from audit_query.keystore.store import KeyStore
from audit_query.keystore.wrapping import Kek
from audit_query.repository.subjects import SubjectQueries
from audit_query.unsealing import Unsealer

subjects = typer.Typer(
    help="Data subjects: erase (destroy their keys), legal holds, right of access, reapply after a restore.",
    no_args_is_help=True,
)
keystore = typer.Typer(help="The key store: a new KEK, migrations, re-wrapping under a new KEK.", no_args_is_help=True)
TENANT = typer.Option(..., help="The subject's tenant.")
SUBJECT = typer.Option(..., help="The subject's id, as producers name it (e.g. the user id).")


@asynccontextmanager
async def _store(settings: AdminSettings) -> AsyncIterator[KeyStore]:
    keks = settings.keks()
    if settings.keystore_url is None or keks is None:
        console.print("[red]set AUDIT_QUERY_KEYSTORE_URL and AUDIT_QUERY_KEYSTORE_KEK(_FILE)[/red]")
        raise typer.Exit(2)
    store = await KeyStore.open(str(settings.keystore_url), settings.keystore_schema, keks)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _read_model(settings: AdminSettings, store: KeyStore | None) -> AsyncIterator[SubjectQueries]:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        _admin_dsn(settings), min_size=0, max_size=2, server_settings={"search_path": settings.db_schema}
    )
    try:
        yield SubjectQueries(pool, timedelta(minutes=15), Unsealer(store))
    finally:
        await pool.close()


@subjects.command("erase")
def erase(tenant: str = TENANT, subject: str = SUBJECT, by: str | None = typer.Option(None)) -> None:
    """Destroy the subject's keys (refused under a legal hold) and record the erasure; prints the report."""
    settings = _admin_settings()

    async def go() -> dict[str, Any]:
        async with _store(settings) as store, _read_model(settings, store) as queries:
            report = await erase_subject(settings, store, queries, tenant, subject, _actor(by))
        return {
            "tenant": report.tenant,
            "pseudonym": report.pseudonym,
            "key_generations_destroyed": list(report.generations),
            "entries": report.entries,
            "audit_id": report.audit_id,
        }

    report = _run(go())
    typer.echo(json.dumps(report))
    console.print(f"erased: {report['entries']} entries of {report['pseudonym']} now read as erased")


@subjects.command("hold")
def hold(
    tenant: str = TENANT,
    subject: str = SUBJECT,
    reason: str = typer.Option(..., help="Why the data must be kept (shown when an erasure is refused)."),
    by: str | None = typer.Option(None),
) -> None:
    """Place a legal hold: the subject's data cannot be erased until it is released."""
    settings = _admin_settings()

    async def go() -> str:
        async with _store(settings) as store:
            pseudonym = await store.pseudonym(tenant, subject)
            await store.hold(tenant, pseudonym, reason, str(_actor(by).id))
            return pseudonym

    console.print(f"held: {_run(go())}")


@subjects.command("release")
def release(tenant: str = TENANT, subject: str = SUBJECT) -> None:
    """Release a legal hold (exit 1 when there was none)."""
    settings = _admin_settings()

    async def go() -> bool:
        async with _store(settings) as store:
            return await store.release(tenant, await store.pseudonym(tenant, subject))

    if not _run(go()):
        console.print("[red]no legal hold on that subject[/red]")
        raise typer.Exit(1)
    console.print("released")


@subjects.command("export")
def export(tenant: str = TENANT, subject: str = SUBJECT, limit: int = typer.Option(10_000, min=1)) -> None:
    """The subject's own entries, opened, as JSON on stdout (right of access; erased fields read as erased)."""
    settings = _admin_settings()

    async def go() -> dict[str, Any]:
        async with _store(settings) as store, _read_model(settings, store) as queries:
            pseudonym = await store.pseudonym(tenant, subject)
            entries = await queries.subject_data(tenant, pseudonym, limit)
        return {"tenant": tenant, "pseudonym": pseudonym, "entries": [e.model_dump(mode="json") for e in entries]}

    typer.echo(json.dumps(_run(go())))


@subjects.command("reapply")
def reapply() -> None:
    """After restoring a key-store backup: destroy again every key an erasure recorded in the audit log destroyed
    (the log keeps the tombstones apart from the store)."""
    settings = _admin_settings()

    async def go() -> tuple[int, int]:
        async with _store(settings) as store, _read_model(settings, None) as queries:
            stones = await queries.recorded_erasures()
            return len(stones), await store.reapply(stones)

    stones, destroyed = _run(go())
    typer.echo(json.dumps({"erasures_recorded": stones, "keys_destroyed": destroyed}))


@keystore.command("kek")
def new_kek() -> None:
    """Print a new random key-encryption key (base64) on stdout, for AUDIT_QUERY_KEYSTORE_KEK(_FILE)."""
    typer.echo(Kek.generate().text())


@keystore.command("migrate")
def migrate() -> None:
    """Create or update the key store's tables (the service also does this when it starts)."""
    settings = _admin_settings()

    async def go() -> None:
        async with _store(settings):
            pass

    _run(go())
    console.print("key store up to date")


@keystore.command("rewrap")
def rewrap() -> None:
    """Re-wrap every key under the current KEK (earlier KEKs in AUDIT_QUERY_KEYSTORE_PREVIOUS_KEK_FILE)."""
    settings = _admin_settings()

    async def go() -> int:
        async with _store(settings) as store:
            return await store.rewrap()

    typer.echo(json.dumps({"rewrapped": _run(go())}))
