"""End-to-end lag: from the producer's acknowledgement of an action (its outcome acknowledged) to the entry being
visible through the query API — in the audit log with its outcome, and in the trace view with its log lines — at a
steady rate of half the projector's capacity measured in the same run; once without witnesses and once with two
litewitness processes cosigning every checkpoint (with their cosignature latency per checkpoint).

The projector (tree and signed checkpoints on) and the query API run as processes of their own, as deployed; the
producer library and the reader run here. Each action is a start, an outcome and three execution-log lines, so
records/s = 5 x actions/s; every fifth action is a probe whose lag is read. Beside the lags: the share spent before
the projector's transaction began, and how busy each process kept the box's cores. Usage: `python -m bench.lag
[--seconds 20] [--runs 3] [--share 0.5] [--witnesses 0,2] [--smoke] [--json PATH]`.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple
from uuid import UUID, uuid4

import asyncpg
import httpx
import structlog
from aiokafka import AIOKafkaProducer
from tests.ports import free_port
from tests.witness import Litewitness, tools

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from audit_producer.config import Settings as ProducerSettings
from audit_projector import logs
from audit_projector.migrations import migrate
from audit_projector.topics import ensure_topics
from audit_query.auth import new_secret, secret_hash
from audit_query.repository import TokenAdmin
from audit_schemas.checkpoint import NoteSigner, verifier_key_as
from bench import figures as figures_out
from bench.cpu import Cpu, cpu_s, sample
from bench.mix import SEED, ActionRecords, action_records, publish_mix
from bench.projector_vs_copy import BOOTSTRAP, OWNER, PROJECTOR

QUERY = os.environ.get("AUDIT_QUERY_DSN", "postgresql://audit_query:audit_query@127.0.0.1:15432/audit")
PARTITIONS = 6
RECORDS_PER_ACTION = 5
FINAL = ("succeeded", "failed")
IN_FLIGHT = 64
"""Actions under way at once, as a busy service has them; past that the schedule waits (the rate reached is
reported beside the rate asked)."""
READ_MARGIN_S = 0.1
"""How far before the oldest unseen probe's start the reader's window opens."""
PROBE_EVERY = 5
PROBE_ACTOR = "u-lag-probe"
"""Every fifth action is a probe, done by this user on any of the entities: the reader lists the probes' entries
only (by their actor, an indexed filter), as a synthetic monitor would, so that measuring does not add to the box
the load of serialising and parsing every entry many times a second."""


@dataclass
class Run:
    """One run: capacity, the steady rate reached, and every measured lag (seconds)."""

    witnesses: int
    load: str
    """What sends the actions: "library" (`audit.action()`) or "raw" (the realistic mix, by bare aiokafka)."""
    capacity: float
    target_rate: float
    achieved_rate: float
    actions: int
    entry_lags: list[float] = field(default_factory=list)
    trace_lags: list[float] = field(default_factory=list)
    cosign_latencies: list[float] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    """How long each of the reader's list requests took (a lag is timed to when the request that saw it was sent)."""
    projector_cpu_s: float = 0.0
    witness_cpu_s: float = 0.0
    """CPU seconds over the steady phase: the projector process (cosigner included), and the witnesses (which share
    this machine here; in production they run elsewhere)."""
    api_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    """The query API's process, and this one (the producer library with its 64 actions in flight, and the reader)."""
    postgres_cpu_s: float = 0.0
    kafka_cpu_s: float = 0.0
    steady_s: float = 0.0
    """The steady phase's wall seconds (its actions, then reading the last of them back)."""
    to_batch_s: list[float] = field(default_factory=list)
    """Per outcome of the steady phase: from its `finished_at` (taken just before it is sent) to the start of the
    projector's transaction that wrote it (`projected_at`): the share of a lag spent before the batch's own work."""
    never_seen: int = 0
    """Acknowledged actions not stored (or probes not visible through the API) three minutes after the last one (0
    expected)."""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.asynccontextmanager
async def _deployment(
    name: str, witnesses: list[Litewitness]
) -> AsyncIterator[tuple[str, str, asyncpg.Connection, int, int]]:
    """Schema, topics, a projector and a query API for one run: the API's base URL, a token, an owner connection,
    the projector's pid and the API's."""
    control = f"{name}_control"
    signer, key = NoteSigner.generate("audit-trail")
    topics = {t: f"{name}.{t}" for t in ("audit", "logs", "dlq", "checkpoints")}
    await migrate(OWNER, name, control_schema=control)
    await ensure_topics(BOOTSTRAP, list(topics.values()), PARTITIONS)
    for w in witnesses:
        for topic in (topics["audit"], topics["logs"]):
            for partition in range(PARTITIONS):
                origin = f"audit-trail/{topic}/{partition}"
                w.add_log(origin, verifier_key_as(signer.verifier_key, origin))
    conn = await asyncpg.connect(OWNER, server_settings={"search_path": name})
    secret = new_secret()
    await TokenAdmin(conn, control).create(uuid4(), "bench", secret_hash(secret), ["audit:read"], None, "bench", None)
    projector_env = {
        **os.environ,
        "AUDIT_PROJECTOR_ENVIRONMENT": "development",
        "AUDIT_PROJECTOR_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "AUDIT_PROJECTOR_DATABASE_URL": PROJECTOR,
        "AUDIT_PROJECTOR_DB_SCHEMA": name,
        "AUDIT_PROJECTOR_CONTROL_SCHEMA": control,
        "AUDIT_PROJECTOR_GROUP_ID": f"{name}-group",
        "AUDIT_PROJECTOR_AUDIT_TOPIC": topics["audit"],
        "AUDIT_PROJECTOR_EXECUTION_LOG_TOPIC": topics["logs"],
        "AUDIT_PROJECTOR_DEAD_LETTER_TOPIC": topics["dlq"],
        "AUDIT_PROJECTOR_CHECKPOINT_TOPIC": topics["checkpoints"],
        "AUDIT_PROJECTOR_CHECKPOINT_KEY": key,
        "AUDIT_PROJECTOR_WITNESSES": json.dumps([{"key": w.vkey, "url": w.url} for w in witnesses]),
        "AUDIT_PROJECTOR_WITNESS_QUORUM": str(len(witnesses)),
    }
    port = free_port()
    query_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUDIT_QUERY_")},
        "AUDIT_QUERY_ENVIRONMENT": "test",
        "AUDIT_QUERY_CURSOR_SECRET": new_secret(),
        "AUDIT_QUERY_DATABASE_URL": QUERY,
        "AUDIT_QUERY_DB_SCHEMA": name,
        "AUDIT_QUERY_CONTROL_SCHEMA": control,
        "AUDIT_QUERY_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "AUDIT_QUERY_PROJECTOR_GROUP": f"{name}-group",
        "AUDIT_QUERY_TOPICS": json.dumps([topics["audit"], topics["logs"]]),
        "AUDIT_QUERY_LOG_LEVEL": "WARNING",
    }
    bin_dir = Path(sys.executable).parent
    try:
        with (
            _process([sys.executable, "-m", "audit_projector", "run", "--log-level", "WARNING"], projector_env) as proj,
            _process([str(bin_dir / "audit-query"), "serve", "--port", str(port)], query_env) as api,
        ):
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as client:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    if api.poll() is not None:
                        raise RuntimeError("the query API exited")
                    await asyncio.sleep(0.1)
            yield base, secret, conn, proj.pid, api.pid
    finally:
        for schema in (name, control):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _projected(conn: asyncpg.Connection, group: str) -> int:
    value = await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM projector_offsets WHERE consumer_group = $1", group
    )
    return int(value)


async def _capacity(conn: asyncpg.Connection, name: str, actions: int) -> float:
    """Records/s the running projector drains a burst of the mix at: from the end of publishing (what it had
    already projected by then subtracted) to the last record, so it is never idle while timed."""
    before = await _projected(conn, f"{name}-group")
    published = await publish_mix(BOOTSTRAP, f"{name}.audit", f"{name}.logs", actions)
    started = time.perf_counter()
    at_start = await _projected(conn, f"{name}-group")
    deadline = time.monotonic() + 600
    while (done := await _projected(conn, f"{name}-group")) < before + published.records:
        if time.monotonic() > deadline:
            raise RuntimeError("the projector did not drain the burst")
        await asyncio.sleep(0.05)
    return (done - at_start) / (time.perf_counter() - started)


class _Baseline(NamedTuple):
    """CPU seconds so far of the projector, the witnesses and the API; the shared sample; the monotonic clock."""

    cpu: list[float]
    shared: Cpu
    wall: float


Act = Callable[[int], Awaitable[tuple[UUID, float]]]
"""Runs action `i` (a probe when `i % PROBE_EVERY == 0`) until its outcome is acknowledged; its audit id and the
wall-clock time it started at."""


@contextlib.asynccontextmanager
async def _library_load(name: str) -> AsyncIterator[tuple[Act, float]]:
    """`audit.action()` around a body shipping three log lines, as a service records them; starts now."""
    settings = ProducerSettings(
        bootstrap_servers=BOOTSTRAP,
        audit_topic=f"{name}.audit",
        execution_log_topic=f"{name}.logs",
        spool_dir=Path(tempfile.mkdtemp(prefix="bench-lag-spool-")),
    )
    async with AuditProducer("bench", settings) as audit:
        shipped = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
        actor, probe = Actor.user("u-bench", "Bench"), Actor.user(PROBE_ACTOR, "Lag probe")

        async def act(i: int) -> tuple[UUID, float]:
            entity = Entity(id=f"lag-{i % 500}", model="resource")
            at = time.time()
            by = probe if i % PROBE_EVERY == 0 else actor
            async with audit.action("update", entity=entity, actor=by, tenant=("acme", "globex")[i % 2]) as scope:
                for step in range(3):
                    shipped.info("step", step=step)
            return scope.audit_id, at

        yield act, time.time()


@contextlib.asynccontextmanager
async def _raw_load(name: str, rate: float, count: int) -> AsyncIterator[tuple[Act, float]]:
    """The realistic mix of `bench/mix.py` (four tenants, thirteen actions, three models, twenty actors; one in five
    actions a probe) sent by bare aiokafka with the library's guarantees (idempotent, acks=all, no linger; the start
    acknowledged, then the three lines handed over, then the outcome acknowledged), every action encoded beforehand
    with the time it is due at. Not the library's load minus its CPU: the mix is wider (many more rollup rows a
    batch) and each line leaves on its own when the client is idle."""
    probe = Actor.user(PROBE_ACTOR, "Lag probe")

    def prepare(rng: random.Random, i: int, starts_at: float) -> ActionRecords:
        at_ms = int((starts_at + i / rate) * 1000)
        return action_records(rng, at_ms, actor=probe if i % PROBE_EVERY == 0 else None, took_ms=0)

    began, trial, tried = time.perf_counter(), random.Random(SEED), min(count, 100)
    for i in range(tried):  # how long encoding takes here, to pick the start time
        prepare(trial, i, time.time())
    per_action = (time.perf_counter() - began) / max(1, tried)
    starts_at = time.time() + 2.0 + 2 * per_action * count
    rng = random.Random(SEED)
    prepared = [prepare(rng, i, starts_at) for i in range(count)]
    gc.collect()
    gc.freeze()  # the prepared records are never garbage: no collection of this process walks them again
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    if time.time() > starts_at:  # the events' times are then earlier than their sending: "before its transaction"
        print(f"warning: the raw load started {time.time() - starts_at:.1f} s late", file=sys.stderr)
    lines: list[asyncio.Future[object]] = []
    try:

        async def act(i: int) -> tuple[UUID, float]:
            made = prepared[i]
            (key, value, headers), (okey, ovalue, oheaders) = made.audit
            await producer.send_and_wait(f"{name}.audit", value, key=key, headers=headers)
            for k, v, h in made.lines:
                lines.append(await producer.send(f"{name}.logs", v, key=k, headers=h))
            await producer.send_and_wait(f"{name}.audit", ovalue, key=okey, headers=oheaders)
            return made.audit_id, starts_at + i / rate

        yield act, starts_at
        await asyncio.gather(*lines)
    finally:
        await producer.stop()
        gc.unfreeze()


async def _steady(
    name: str,
    base: str,
    secret: str,
    conn: asyncpg.Connection,
    rate: float,
    seconds: float,
    run: Run,
    baseline: Callable[[], _Baseline],
) -> _Baseline:
    """Actions at `rate` actions/s for `seconds` (open loop), the probes among them read back through the API and
    every one of them found stored at the end; what `baseline()` took when the first action was due."""
    acked: dict[str, float] = {}  # probes only
    every: list[UUID] = []
    entry_seen: dict[str, float] = {}
    traced: list[str] = []
    count = int(rate * seconds)
    trace_every = max(1, count // 60 // PROBE_EVERY) * PROBE_EVERY  # about 60 probes' traces followed
    headers = {"authorization": f"Bearer {secret}"}
    load = _raw_load(name, rate, count) if run.load == "raw" else _library_load(name)
    async with load as (act, starts_at), httpx.AsyncClient(base_url=base, headers=headers) as api:
        done = asyncio.Event()
        in_flight = asyncio.Semaphore(IN_FLIGHT)
        began: dict[str, float] = {}  # each action's start, wall clock: where the reader's window opens

        async def one(i: int) -> None:
            try:
                audit_id, at = await act(i)
            finally:
                in_flight.release()
            began[str(audit_id)] = at
            every.append(audit_id)
            if i % PROBE_EVERY == 0:
                acked[str(audit_id)] = time.monotonic()
            if i % trace_every == 0:
                traced.append(str(audit_id))

        async def entries() -> None:
            """Every probe's entry recorded since the oldest probe not seen yet, page by page, every 20 ms."""
            while not done.is_set() or len(entry_seen) < len(acked):
                unseen = [a for a in acked if a not in entry_seen]
                if not unseen:
                    await asyncio.sleep(0.02)
                    continue
                # From just before the oldest action not seen yet (its entry's time is taken after `began`, on the
                # same clock): a wider window only makes each round read more pages, and a round's length is part
                # of every lag measured.
                since = datetime.fromtimestamp(min(began[a] for a in unseen) - READ_MARGIN_S, UTC).isoformat()
                params = {"since": since, "user_id": PROBE_ACTOR, "sort": "time", "order": "asc", "limit": "500"}
                for _ in range(50):
                    asked = time.monotonic()  # visible by the time the request was sent, at the latest
                    page = (await api.get("/v1/audit", params=params)).json()
                    run.read_s.append(time.monotonic() - asked)
                    now = asked
                    for e in page.get("data", []):
                        audit_id = e["audit_id"]
                        if e["outcome"]["status"] in FINAL and audit_id in acked and audit_id not in entry_seen:
                            entry_seen[audit_id] = now
                    if not page.get("next_cursor"):
                        break
                    params["cursor"] = page["next_cursor"]
                await asyncio.sleep(0.02)

        async def trace(audit_id: str) -> None:
            while True:
                asked = time.monotonic()
                body = (await api.get(f"/v1/traces/{audit_id.replace('-', '')}")).json()
                if body.get("entry", {}).get("outcome", {}).get("status") in FINAL and len(body.get("logs", [])) >= 3:
                    run.trace_lags.append(asked - acked[audit_id])
                    return
                await asyncio.sleep(0.02)

        reader = asyncio.create_task(entries())
        followers: list[asyncio.Task[None]] = []
        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic() + max(0.0, starts_at - time.time())
        await asyncio.sleep(max(0.0, started - time.monotonic()))
        taken = baseline()
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await in_flight.acquire()  # the service is saturated: no backlog of tasks piles up behind it
            tasks.append(asyncio.create_task(one(i)))
            while traced:
                followers.append(asyncio.create_task(trace(traced.pop())))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        followers += [asyncio.create_task(trace(t)) for t in traced]
        done.set()
        try:
            await asyncio.wait_for(asyncio.gather(reader, *followers), 180)
        except TimeoutError:
            run.never_seen = len(acked) - len(entry_seen)
    stored = await conn.fetchval("SELECT count(*) FROM audit_outcomes WHERE audit_id = ANY($1::uuid[])", every)
    run.never_seen = max(run.never_seen, len(every) - stored)
    run.actions = count
    run.achieved_rate = count / elapsed
    run.entry_lags = [entry_seen[a] - acked[a] for a in acked if a in entry_seen]
    return taken


async def one_run(
    witness_count: int, seconds: float, burst: int, bin_dir: Path | None, share: float = 0.5, load: str = "library"
) -> Run:
    name = f"bench_{uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-witnesses-") as home:
        witnesses = [
            Litewitness(bin_dir, Path(home) / f"w{i}", f"witness.bench/w{i}") for i in range(witness_count)
        ] if bin_dir else []  # fmt: skip
        try:
            async with _deployment(name, witnesses) as (base, secret, conn, projector, api):
                capacity = await _capacity(conn, name, burst)
                target = capacity * share / RECORDS_PER_ACTION
                run = Run(witness_count, load, capacity, target * RECORDS_PER_ACTION, 0.0, 0)

                def baseline() -> _Baseline:  # when the steady phase's first action is due (its load prepared)
                    cpu = [cpu_s(projector), sum(cpu_s(w.pid) for w in witnesses), cpu_s(api)]
                    return _Baseline(cpu, sample(), time.monotonic())

                steady_from = datetime.now(UTC)
                cpu, shared, wall = await _steady(name, base, secret, conn, target, seconds, run, baseline)
                run.steady_s = time.monotonic() - wall
                spent = sample() - shared
                run.api_cpu_s = cpu_s(api) - cpu[2]
                run.bench_cpu_s, run.postgres_cpu_s, run.kafka_cpu_s = spent.here, spent.postgres, spent.kafka
                run.to_batch_s = [
                    float(r["s"])
                    for r in await conn.fetch(
                        "SELECT extract(epoch FROM projected_at - finished_at) AS s FROM audit_outcomes"
                        " WHERE finished_at >= $1",
                        steady_from,
                    )
                ]
                run.projector_cpu_s = cpu_s(projector) - cpu[0]
                run.witness_cpu_s = sum(cpu_s(w.pid) for w in witnesses) - cpu[1]
                run.achieved_rate *= RECORDS_PER_ACTION
                if witnesses:
                    await asyncio.sleep(3)  # the last checkpoints' cosignatures
                    rows = await conn.fetch(
                        f"""SELECT extract(epoch FROM k.received_at - c.signed_at) AS s
                              FROM "{name}_control".cosignatures k
                              JOIN "{name}_control".checkpoints c USING (origin, tree_size)"""
                    )
                    run.cosign_latencies = [float(r["s"]) for r in rows]
                return run
        finally:
            for w in witnesses:
                w.close()


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f" ± {statistics.pstdev(values) * 1000:.0f}"


def report(runs: list[Run]) -> dict[str, object]:
    """A line per variant: medians over runs of each run's p50 and p99 (ms), with the spread."""
    out: dict[str, object] = {}
    print(f"{'load':>7} | {'witnesses':>9} | {'capacity rec/s':>14} | {'steady rec/s':>12} | {'list p50 ms':>13} | "
          f"{'list p99 ms':>13} | {'trace p50 ms':>13} | {'trace p99 ms':>13} | {'cosign p50/p99':>17} | "
          "lost")  # fmt: skip
    for load, count in sorted({(r.load, r.witnesses) for r in runs}):
        mine = [r for r in runs if (r.load, r.witnesses) == (load, count)]
        row = {
            "capacity": statistics.median(r.capacity for r in mine),
            "steady": statistics.median(r.achieved_rate for r in mine),
            "list_p50": [_quantile(r.entry_lags, 0.5) for r in mine],
            "list_p99": [_quantile(r.entry_lags, 0.99) for r in mine],
            "trace_p50": [_quantile(r.trace_lags, 0.5) for r in mine],
            "trace_p99": [_quantile(r.trace_lags, 0.99) for r in mine],
            "cosign_p50": [_quantile(r.cosign_latencies, 0.5) for r in mine if r.cosign_latencies],
            "cosign_p99": [_quantile(r.cosign_latencies, 0.99) for r in mine if r.cosign_latencies],
            "never_seen": sum(r.never_seen for r in mine),
            "projector_cpu_s": statistics.median(r.projector_cpu_s for r in mine),
            "read_p50": statistics.median(_quantile(r.read_s, 0.5) for r in mine),
            "to_batch_p50": [_quantile(r.to_batch_s, 0.5) for r in mine if r.to_batch_s],
            "to_batch_p99": [_quantile(r.to_batch_s, 0.99) for r in mine if r.to_batch_s],
            "witness_cpu_s": statistics.median(r.witness_cpu_s for r in mine),
            "cores_busy": {
                part: statistics.median(getattr(r, f"{part}_cpu_s") / r.steady_s for r in mine)
                for part in ("projector", "api", "bench", "postgres", "kafka", "witness")
            },
        }

        def ms(key: str, row: dict[str, object] = row) -> str:
            values = row[key]
            assert isinstance(values, list)
            if not values:
                return "—"
            return f"{statistics.median(values) * 1000:.0f}{_spread(values)}"

        cosign = f"{ms('cosign_p50')} / {ms('cosign_p99')}" if count else "—"
        print(f"{load:>7} | {count:>9} | {row['capacity']:>14,.0f} | {row['steady']:>12,.0f} | {ms('list_p50'):>13} | "
              f"{ms('list_p99'):>13} | {ms('trace_p50'):>13} | {ms('trace_p99'):>13} | {cosign:>17} | "
              f"{row['never_seen']}")  # fmt: skip
        read_ms = statistics.median(_quantile(r.read_s, 0.5) for r in mine) * 1000
        print(f"{'':>19}   projector CPU {row['projector_cpu_s']:.1f} s, witnesses CPU {row['witness_cpu_s']:.1f} s "
              f"over the steady phase; the reader's list requests took {read_ms:.0f} ms "
              f"p50; outcome sent -> its batch's transaction began: {ms('to_batch_p50')} ms p50, "
              f"{ms('to_batch_p99')} ms p99")  # fmt: skip
        busy = row["cores_busy"]
        assert isinstance(busy, dict)
        print(f"{'':>19}   cores busy over the steady phase: " + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
              + f" (sum {sum(busy.values()):.2f} of {os.cpu_count()})")  # fmt: skip
        out[str(count) if load == "library" else f"{load} {count}"] = row
    with_witnesses = [k for k in out if k.isdigit() and k != "0"]
    if "0" in out and with_witnesses:
        base, other = out["0"], out[max(with_witnesses, key=int)]
        assert isinstance(base, dict)
        assert isinstance(other, dict)
        ratio = statistics.median(other["list_p99"]) / statistics.median(base["list_p99"])
        print(f"list p99 with witnesses ÷ without: {ratio:.2f}")
        out["p99_ratio_with_witnesses"] = ratio
    return out


async def main(
    seconds: float,
    runs: int,
    smoke: bool,
    out: Path,
    variants: tuple[tuple[str, int], ...] = (("library", 0), ("library", 2)),
    share: float = 0.5,
) -> None:
    logs.configure("WARNING")
    bin_dir = tools()
    results: list[Run] = []
    burst = 200 if smoke else 12_000  # 60,000 records: most of them drained after publishing ends
    for n in range(runs):
        for load, count in variants if n % 2 == 0 else variants[::-1]:  # alternating: none always runs second
            results.append(await one_run(count, seconds, burst, bin_dir, share, load))
    print(f"end-to-end lag on {os.cpu_count()} cores, {seconds:.0f} s at {share:.0%} of the measured capacity per run, "
          f"median of {runs} run(s)")  # fmt: skip
    figures = report(results)
    raw = [
        asdict(r) | {"entry_lags": len(r.entry_lags), "read_s": len(r.read_s), "to_batch_s": len(r.to_batch_s)}
        for r in results
    ]
    figures_out.write(
        out,
        {"smoke": smoke, "cores": os.cpu_count(), "seconds": seconds, "runs": runs, "variants": figures, "raw": raw},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="3 s, one run: that it works, not its figures")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("lag"))
    parser.add_argument("--share", type=float, default=0.5, help="the steady rate as a share of the capacity")
    parser.add_argument(
        "--witnesses", default="0,2", help="the variants, by number of witnesses, comma-separated (default 0,2)"
    )
    parser.add_argument(
        "--load",
        default="library",
        help='what sends the actions, comma-separated: "library" (audit.action(), one action on 500 entities of two '
        'tenants) and/or "raw" (the realistic mix of bench/mix.py by bare aiokafka, encoded beforehand)',
    )
    args = parser.parse_args()
    counts = tuple(int(c) for c in args.witnesses.split(","))
    loads = tuple(args.load.split(","))
    if not set(loads) <= {"library", "raw"}:
        parser.error(f"--load takes library and/or raw, not {args.load!r}")
    variants = tuple((load, count) for load in loads for count in counts)
    if args.smoke:  # every load and both witness variants, briefly
        variants = (("library", 0), ("library", 2), ("raw", 0))
    asyncio.run(
        main(
            3 if args.smoke else args.seconds,
            1 if args.smoke else args.runs,
            args.smoke,
            args.json,
            variants,
            args.share,
        )
    )
