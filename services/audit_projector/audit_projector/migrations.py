"""Apply the ordered `.sql` files under an advisory lock, so projectors starting together take turns."""

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

import asyncpg
import structlog

from audit_projector.errors import DependencyUnavailableError, MigrationError, classify_db_error
from audit_schemas import postgres

log = structlog.get_logger(__name__)

_LOCK_NAMESPACE: Final = 0x41554454  # "AUDT": keeps our advisory locks apart from other users'


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: str
    """The file name's numeric prefix, e.g. `0001`."""
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the SQL, to notice a file edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled(kind: str = "read_model") -> list[Migration]:
    """The migrations shipped with this package, in order: the read model's, or the control schema's."""
    folder = resources.files("audit_projector") / "migrations"
    if kind == "control":
        folder = folder / "control"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(version=version, name=name, sql=entry.read_text()))
    return sorted(found, key=lambda m: m.version)


ReadModelKind = Literal["live", "shadow"]


async def migrate(
    dsn: str,
    schema: str,
    migrations: list[Migration] | None = None,
    *,
    control_schema: str | None = "audit_control",
    kind: ReadModelKind = "live",
) -> list[str]:
    """Bring the control schema and `schema` up to date and register `schema` as a read model of that kind (a
    model already registered keeps its kind); return the versions applied now.

    Idempotent and concurrency-safe. The control schema holds what a rebuild of the read model must never
    touch (API tokens, sessions, the registry of read models); it is migrated first, under its own lock.
    """
    applied = []
    if control_schema is not None:
        applied += [f"control/{v}" for v in await _migrate(dsn, control_schema, bundled("control"))]
    registry = None if control_schema is None else (control_schema, kind)
    applied += await _migrate(dsn, schema, bundled() if migrations is None else migrations, registry)
    return applied


async def register_on(
    conn: asyncpg.Connection, control_schema: str, schema: str, kind: str, *, keep: bool = False
) -> None:
    """Register `schema` by OID as `kind` (`keep`: an already registered model keeps its kind), on `conn` — the
    swap does it in its own transaction."""
    control = '"' + control_schema.replace('"', '""') + '"'
    on_conflict = "NOTHING" if keep else "UPDATE SET kind = EXCLUDED.kind, changed_at = now()"
    await conn.execute(
        f"""INSERT INTO {control}.read_models (schema_oid, kind, registered_name)
            SELECT oid, $2, nspname FROM pg_catalog.pg_namespace WHERE nspname = $1
            ON CONFLICT (schema_oid) DO {on_conflict}""",
        schema,
        kind,
    )


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await postgres.connect(dsn)
    except Exception as e:
        error = classify_db_error("cannot connect to run migrations", e)
        if isinstance(error, DependencyUnavailableError):
            raise error from e
        raise MigrationError(str(error)) from e


async def _migrate(
    dsn: str, schema: str, todo: list[Migration], registry: tuple[str, ReadModelKind] | None = None
) -> list[str]:
    """Apply `todo` to `schema` under its lock; with `registry` (control schema, kind) also list `schema` there as a
    read model (the owner's functions act on no other), on the same connection."""
    conn = await _connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE, schema)
        try:
            done = await _apply(conn, schema, todo)
            if registry is not None:
                await register_on(conn, registry[0], schema, registry[1], keep=True)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_NAMESPACE, schema)
    except asyncpg.PostgresError as e:
        raise MigrationError(f"migration of schema {schema!r} failed: {e}") from e
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, schema: str, todo: list[Migration]) -> list[str]:
    quoted = '"' + schema.replace('"', '""') + '"'
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
    await conn.execute(f"SET search_path TO {quoted}")
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    applied = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
    done = []
    for migration in todo:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(f"migration {migration.version}_{migration.name} changed after it was applied")
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("migration_applied", schema=schema, version=migration.version, name=migration.name)
        done.append(migration.version)
    return done
