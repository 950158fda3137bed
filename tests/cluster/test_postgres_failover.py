"""PostgreSQL failover under load: the primary's host killed (its pg_auto_failover keeper and postgres, SIGKILL),
or frozen (SIGSTOP) and woken after the failover, while actions with execution logs stream and the query API is
read from the standby (`prefer-standby`) and writes sessions on the primary. The synchronous standby is promoted,
the projector reconnects through its multi-host DSN and resumes at its stored offsets, queries and sign-ins
recover, the woken zombie is demoted; nothing is lost or doubled and the trees verify. Prints the time from the
fault to the first projected batch, the first successful query and the first sign-in."""

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import uuid4

import asyncpg
import httpx
import pytest
import structlog
from pydantic import SecretStr

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from audit_projector.integrity import verify_integrity
from audit_query.auth import new_secret, secret_hash
from audit_query.repository import TokenAdmin
from audit_schemas import postgres
from audit_schemas.checkpoint import NoteSigner
from tests.cluster.conftest import HighlyAvailable
from tests.cluster.test_faults import Stream, _at_least, _settled, streaming
from tests.conftest import Stack, isolated_on, projector_running, query_server
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


async def _entries(dsn: str) -> int | None:
    """Entries on whichever node is the read-write primary now (None: none answers as one). Connects as the
    services do, each host its own deadline: a frozen first host must not hide the promoted one."""
    try:
        conn = await asyncio.wait_for(postgres.connect(f"{dsn}&connect_timeout=2"), 6)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        if await conn.fetchval(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool", timeout=5
        ):
            return None
        return int(await conn.fetchval("SELECT count(*) FROM audit_entries", timeout=5))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        return None
    finally:
        await postgres.close(conn)


async def test_the_primary_killed_fails_over_and_loses_nothing(stack: Stack, highly_available: HighlyAvailable) -> None:
    await _fault_under_load(stack, highly_available, "kill")


async def test_a_frozen_primary_is_failed_over_and_fenced_when_it_wakes(
    stack: Stack, highly_available: HighlyAvailable
) -> None:
    await _fault_under_load(stack, highly_available, "freeze")


@pytest.fixture(autouse=True)
def _restored(highly_available: HighlyAvailable) -> Iterator[None]:
    """A test that failed halfway leaves no node frozen or down for the next."""
    yield
    for node in (1, 2):
        highly_available.thaw(node)
        highly_available.start(node)


@dataclass
class Probes:
    """What the query API answered while the fault happened: (time, status) of reads and of sign-ins (writes)."""

    reads: list[tuple[float, int]] = field(default_factory=list)
    sign_ins: list[tuple[float, int]] = field(default_factory=list)


async def _fault_under_load(stack: Stack, ha: HighlyAvailable, fault: str) -> None:
    on_ha = dataclasses.replace(
        stack, owner_dsn=ha.owner_dsn, projector_dsn=ha.projector_dsn, query_dsn=ha.query_dsn, admin_dsn=None
    )
    async with isolated_on(on_ha) as isolated:
        signer, key = NoteSigner.generate("audit-trail")
        settings = isolated.projector.model_copy(
            update={"checkpoint_key": SecretStr(key), "checkpoint_every_leaves": 50, "probe_interval_s": 0.3}
        )
        query = isolated.query.model_copy(
            update={
                "read_database_url": ha.query_dsn.replace("read-write", "prefer-standby"),
                "failover_check_s": 1.0,
            }
        )
        secret = new_secret()
        conn = await asyncpg.connect(ha.owner_dsn)
        try:
            await TokenAdmin(conn, isolated.query.control_schema).create(
                uuid4(), "failover", secret_hash(secret), ("audit:read",), None, "tests", None
            )
        finally:
            await conn.close()
        owner_on_schema = f"{ha.owner_dsn}&options=-csearch_path%3D{isolated.name}"
        probes = Probes()
        stop = asyncio.Event()

        async def probe(base: str) -> None:
            headers = {"authorization": f"Bearer {secret}"}
            async with httpx.AsyncClient(base_url=base, timeout=5, headers=headers) as c:
                for _ in range(10_000):  # bounded
                    if stop.is_set():
                        return
                    for route, into in (("/v1/audit/count", probes.reads), ("/v1/session", probes.sign_ins)):
                        try:
                            if into is probes.reads:
                                status = (await c.get(route)).status_code
                            else:
                                status = (await c.post(route, json={"credential": secret})).status_code
                        except httpx.HTTPError:
                            status = 0
                        into.append((time.monotonic(), status))
                    await asyncio.sleep(0.1)

        async with (
            projector_running(settings),
            query_server(query) as base,
            AuditProducer("ops-service", isolated.producer) as audit,
        ):
            async with httpx.AsyncClient(base_url=base, timeout=10) as c:
                reads = (await c.get("/readyz")).json()["checks"]["reads"]
            assert reads["standby"] is True, reads  # reads are served by the hot standby
            await _live_tail_streams(base, secret, audit)  # from the standby, through the projector's commits
            async with streaming(audit) as seen:
                prober = asyncio.create_task(probe(base))
                outcome = await _fail_over(ha, seen, probes, owner_on_schema, fault)
                stop.set()
                await prober
            await _settled(isolated, seen)  # the projector still runs: what was acknowledged last is projected
            await ha.settled()  # the victim is back, as the new primary's standby
            await eventually(lambda: _reads_on_standby(base), within=60, interval=0.5)
            await _live_tail_streams(base, secret, audit)
        assert seen.other == []
        assert seen.refused == []  # Kafka stood throughout: producers never noticed the database's failover
        conn = await asyncpg.connect(ha.owner_dsn, server_settings={"search_path": isolated.name})
        try:
            report = await verify_integrity(conn, settings.control_schema, [signer.verifier_key], settings.log_name)
        finally:
            await conn.close()
        assert report.found == 0, [str(f) for f in report.findings[:10]]
        failed = sum(1 for t, s in probes.reads if t > outcome.at and s != 200)
        print(
            f"primary node {outcome.victim} {'killed' if fault == 'kill' else 'frozen'}, node {outcome.promoted} "
            f"promoted: first projected batch after {outcome.first_batch:.1f} s, first successful query after "
            f"{outcome.first_query:.1f} s ({failed} reads failed meanwhile), first sign-in after "
            f"{outcome.first_sign_in:.1f} s; {len(seen.acknowledged)} actions streamed, 0 lost, 0 doubled"
        )


@dataclass(frozen=True)
class FailedOver:
    victim: int
    promoted: int
    at: float
    first_batch: float
    first_query: float
    first_sign_in: float


async def _fail_over(ha: HighlyAvailable, seen: Stream, probes: Probes, owner_dsn: str, fault: str) -> FailedOver:
    """Kill or freeze the primary mid-stream and measure the recovery; then bring the victim back."""
    await eventually(lambda: _at_least(seen, 50), within=60)
    victim = await ha.primary()
    assert victim is not None
    before = await _entries(owner_dsn) or 0
    at = time.monotonic()
    ha.kill(victim) if fault == "kill" else ha.freeze(victim)

    async def projected_again() -> bool:
        n = await _entries(owner_dsn)
        return n is not None and n > before

    await eventually(projected_again, within=120, interval=0.2)
    first_batch = time.monotonic() - at

    async def promoted_node() -> int | None:
        node = await ha.primary()
        return node if node not in (None, victim) else None

    promoted = await eventually(promoted_node, within=60, interval=0.5)
    await eventually(lambda: _answered_since(probes.reads, at), within=120, interval=0.2)
    await eventually(lambda: _answered_since(probes.sign_ins, at), within=120, interval=0.2)
    first_query = next(t for t, s in probes.reads if t > at and s == 200) - at
    first_sign_in = next(t for t, s in probes.sign_ins if t > at and s == 200) - at
    if fault == "kill":
        ha.start(victim)  # it rejoins as the new primary's standby
    else:
        ha.thaw(victim)  # the zombie wakes believing it is primary; its keeper learns otherwise and demotes it
    now = len(seen.acknowledged)
    await eventually(lambda: _at_least(seen, now + 50), within=60)
    return FailedOver(victim, promoted, at, first_batch, first_query, first_sign_in)


async def _answered_since(answered: list[tuple[float, int]], since: float) -> bool:
    return any(t > since and s == 200 for t, s in answered)


async def _reads_on_standby(base: str) -> bool:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        return bool((await c.get("/readyz")).json()["checks"].get("reads", {}).get("standby"))


async def _live_tail_streams(base: str, secret: str, audit: AuditProducer) -> None:
    """A running action's live trace shows its entry and each log line as they are projected (and replayed)."""
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    go = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def action() -> None:
        async with audit.action(
            "execute", entity=Entity(id="job-1", model="integration"), actor=Actor.user("u-ops"), tenant="acme"
        ) as act:
            log.info("step 1")
            started.set_result(act.audit_id.hex)
            await go.wait()
            log.info("step 2")

    running = asyncio.create_task(action())
    trace_id = await asyncio.wait_for(started, 10)
    kinds: list[tuple[str, str | None]] = []
    headers = {"authorization": f"Bearer {secret}"}
    async with (
        httpx.AsyncClient(base_url=base, headers=headers) as c,
        asyncio.timeout(60),
        c.stream("GET", f"/v1/traces/{trace_id}/stream", timeout=60) as response,
    ):
        assert response.status_code == 200
        kind = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                kinds.append((kind, data.get("message")))
                if kinds == [("entry", None), ("log", "step 1")]:
                    go.set()
                if kind == "end":
                    break
    await running
    assert [k for k in kinds if k[0] != "outcome"] == [("entry", None), ("log", "step 1"), ("log", "step 2"),
                                                      ("end", None)], kinds  # fmt: skip
