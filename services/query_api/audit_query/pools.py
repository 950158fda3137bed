"""The query API's PostgreSQL pools: one for reads (a standby may serve them) and one for the service's own writes
(sessions, token use) on the primary. asyncpg applies `target_session_attrs` only when a connection opens, so each
pool is recycled when the server its DSN resolves to changes (a failover) and after a rebuild is swapped in."""

import asyncio
import contextlib
import typing
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import structlog
from prometheus_client import Gauge

from audit_query.errors import StoreUnavailableError, store_errors
from audit_schemas import postgres
from audit_schemas.read_model import SWAP_CHANNEL

SESSION_SETTINGS: Final = {
    "statement_timeout": "20s",
    "lock_timeout": "5s",
    "idle_in_transaction_session_timeout": "30s",
}
"""Every session's limits: no read holds a lock or a transaction open for long."""

REPLAY_LAG: Final = Gauge(
    "audit_query_read_replay_lag_seconds",
    "How far behind the primary the server answering reads is (0 on the primary itself).",
    multiprocess_mode="max",
)
READS_ON_STANDBY: Final = Gauge(
    "audit_query_reads_on_standby",
    "1 while reads are answered by a hot standby, 0 on the primary.",
    multiprocess_mode="max",
)

_REPLICA_SQL: Final = """
SELECT pg_is_in_recovery() AS standby,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8 AS lag_s
"""
"""A standby that has replayed all it received is current, however long ago the primary last wrote."""

_SERVER_SQL: Final = (
    "SELECT coalesce(host(inet_server_addr()), ''), coalesce(inet_server_port(), 0), pg_is_in_recovery()"
)

_LISTENER_CHECK_S: Final = 5.0
"""How often the rebuild-swap listener checks that its server still answers as the primary, and how long a check
of a server's role or replay lag may take: a frozen server answers none."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Replica:
    """What answers reads: a standby or not, and how many seconds of the primary's commits it has yet to apply."""

    standby: bool
    lag_s: float


class Pools:
    """The read pool and the write pool (the same pool when no separate read DSN is configured)."""

    def __init__(self, read: asyncpg.Pool, write: asyncpg.Pool, read_dsn: str, write_dsn: str) -> None:
        self.read = read
        self.write = write
        self._dsns = {"read": read_dsn, "write": write_dsn}
        self._servers: dict[str, tuple[object, ...]] = {}
        self._pending: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, write_dsn: str, read_dsn: str | None, schema: str) -> "Pools":
        """Create the pools lazily (min_size=0), so the API starts, and reports, while PostgreSQL is down."""
        write = await _pool(write_dsn, schema, "audit-query")
        read = write if read_dsn is None else await _pool(read_dsn, schema, "audit-query/reads")
        return cls(read, write, read_dsn or write_dsn, write_dsn)

    @property
    def separate(self) -> bool:
        return self.read is not self.write

    async def close(self) -> None:
        await postgres.close_pool(self.write)
        if self.separate:
            await postgres.close_pool(self.read)

    async def replica(self) -> Replica:
        """The read side's standby status and replay lag (raises StoreUnavailableError when it does not answer)."""
        with store_errors():
            async with self.read.acquire(timeout=_LISTENER_CHECK_S) as conn:  # (also bounds the release)
                row = await conn.fetchrow(_REPLICA_SQL, timeout=_LISTENER_CHECK_S)
        assert row is not None
        replica = Replica(bool(row["standby"]), float(row["lag_s"]))
        REPLAY_LAG.set(replica.lag_s)
        READS_ON_STANDBY.set(int(replica.standby))
        return replica

    async def follow_failovers(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        """Until `stop`: every `every_s`, open a fresh connection per DSN (so `target_session_attrs` is applied)
        and recycle that pool's connections when it lands on another server or the server changed role."""
        while not stop.is_set():
            for kind in ("write", "read") if self.separate else ("write",):
                await self._check_server(kind)
            with contextlib.suppress(StoreUnavailableError):
                await self.replica()  # keeps the lag gauge current between readiness probes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def _check_server(self, kind: str) -> None:
        try:
            conn = await postgres.connect(self._dsns[kind], server_settings={"application_name": "audit-query/roles"})
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("database_unreachable", pool=kind, error=str(e))
            return
        try:
            server = tuple(await conn.fetchrow(_SERVER_SQL, timeout=_LISTENER_CHECK_S) or ())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:  # (a frozen server: TimeoutError)
            log.warning("database_unreachable", pool=kind, error=repr(e))
            return
        finally:
            conn.terminate()
        before = self._servers.get(kind)
        self._servers[kind] = server
        if before is not None and before != server:
            log.warning("database_server_changed", pool=kind, before=list(before), now=list(server))
            await self.recycle(kind)

    async def recycle(self, kind: str) -> None:
        """Make every connection of a pool reconnect before its next use (in-use ones when released)."""
        pool = self.write if kind == "write" else self.read
        await pool.expire_connections()

    def write_failed(self, error: BaseException) -> None:
        """A write refused as read-only means the write pool sits on a demoted server: recycle it now."""
        if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
            self._spawn(self.recycle("write"))

    async def watch_swaps(self, schema: str, stop: asyncio.Event) -> None:
        """Until `stop`: listen on the primary for a rebuild swapped in as `schema`, then recycle the pools, so no
        connection keeps a session (prepared statements, cached plans) from before the swap; the read pool once
        its server has replayed the swap. Reconnects if dropped, and when its server stops answering or is no
        longer the primary (after a failover a NOTIFY comes from the promoted node only)."""

        def swapped(conn: object, _pid: int, _channel: str, payload: object) -> None:
            if payload == schema:
                log.info("read_model_swapped", schema=schema)
                self._spawn(self._after_swap(typing.cast(asyncpg.Connection, conn)))

        while not stop.is_set():
            try:
                conn = await postgres.connect(
                    self._dsns["write"],
                    server_settings={"application_name": "audit-query/swaps"},
                    command_timeout=_LISTENER_CHECK_S,
                )
                try:
                    await conn.add_listener(SWAP_CHANNEL, swapped)
                    while not stop.is_set() and not conn.is_closed():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), _LISTENER_CHECK_S)
                        if not stop.is_set() and await conn.fetchval("SELECT pg_is_in_recovery()"):
                            break  # a demoted primary: listen on the promoted one (a frozen one times out)
                finally:
                    await postgres.close(conn)  # bounded: the server may be a frozen former primary
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("swap_watch_lost", error=str(e))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)

    async def _after_swap(self, listener: asyncpg.Connection) -> None:
        await self.write.expire_connections()
        if not self.separate:
            return
        try:
            lsn = await listener.fetchval("SELECT pg_current_wal_lsn()::text")
            for _ in range(300):  # bounded: 30 s, then recycle anyway
                done = await self.read.fetchval(
                    "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn
                )
                if done:
                    break
                await asyncio.sleep(0.1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("swap_replay_unknown", error=str(e))
        await self.read.expire_connections()

    def _spawn(self, work: typing.Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


async def _keep_session(conn: "asyncpg.Connection[asyncpg.Record]") -> None:
    """Pool connections carry no session state to reset: settings are transaction-local, listeners live on their
    own connection, no advisory locks are taken; asyncpg still rolls back any open transaction. Skipping the reset
    query saves a round trip per request."""


async def _pool(dsn: str, schema: str, name: str) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        connect=typing.cast(Any, postgres.connect),  # each host of a multi-host DSN its own deadline
        min_size=0,
        max_size=10,
        reset=_keep_session,
        server_settings={"search_path": schema, "application_name": name, **SESSION_SETTINGS},
        command_timeout=30,
    )
    return pool
