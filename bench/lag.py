"""End-to-end lag: from the producer's acknowledgement of an action (its outcome acknowledged) to the entry being
visible through the query API — in the audit log with its outcome, and in the trace view with its log lines — at a
steady rate of half the projector's capacity measured in the same run; once without witnesses and once with two
litewitness processes cosigning every checkpoint (with their cosignature latency per checkpoint).

The projector (tree and signed checkpoints on) and the query API run as processes of their own, as deployed; the
producer library and the reader run here. Each action is a start, an outcome and three execution-log lines, so
records/s = 5 x actions/s. Usage: `python -m bench.lag [--seconds 20] [--runs 3] [--smoke] [--json PATH]`.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import asyncpg
import httpx
import structlog
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
from bench.cpu import cpu_s
from bench.mix import publish_mix
from bench.projector_vs_copy import BOOTSTRAP, OWNER, PROJECTOR

QUERY = os.environ.get("AUDIT_QUERY_DSN", "postgresql://audit_query:audit_query@127.0.0.1:15432/audit")
PARTITIONS = 6
RECORDS_PER_ACTION = 5
FINAL = ("succeeded", "failed")
IN_FLIGHT = 64
"""Actions under way at once, as a busy service has them; past that the schedule waits (the rate reached is
reported beside the rate asked)."""
READ_MARGIN_S = 0.1
"""How far before the oldest unseen action's start the reader's window opens."""


@dataclass
class Run:
    """One run: capacity, the steady rate reached, and every measured lag (seconds)."""

    witnesses: int
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
    never_seen: int = 0
    """Acknowledged actions not visible three minutes after the last one (0 expected)."""


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
) -> AsyncIterator[tuple[str, str, asyncpg.Connection, int]]:
    """Schema, topics, a projector and a query API for one run: the API's base URL, a token, an owner connection
    and the projector's pid."""
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
            yield base, secret, conn, proj.pid
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


async def _steady(name: str, base: str, secret: str, rate: float, seconds: float, run: Run) -> None:
    """Actions at `rate` actions/s for `seconds` (open loop), each read back through the API."""
    settings = ProducerSettings(
        bootstrap_servers=BOOTSTRAP,
        audit_topic=f"{name}.audit",
        execution_log_topic=f"{name}.logs",
        spool_dir=Path(tempfile.mkdtemp(prefix="bench-lag-spool-")),
    )
    acked: dict[str, float] = {}
    entry_seen: dict[str, float] = {}
    traced: list[str] = []
    trace_every = max(1, int(rate * seconds) // 60)  # about 60 traces followed per run
    headers = {"authorization": f"Bearer {secret}"}
    async with AuditProducer("bench", settings) as audit, httpx.AsyncClient(base_url=base, headers=headers) as api:
        shipped = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
        actor = Actor.user("u-bench", "Bench")
        done = asyncio.Event()

        in_flight = asyncio.Semaphore(IN_FLIGHT)

        began: dict[str, float] = {}  # each action's start, wall clock: where the reader's window opens

        async def one(i: int) -> None:
            entity = Entity(id=f"lag-{i % 500}", model="resource")
            try:
                tenant = ("acme", "globex")[i % 2]
                at = time.time()
                async with audit.action("update", entity=entity, actor=actor, tenant=tenant) as act:
                    began[str(act.audit_id)] = at
                    for step in range(3):
                        shipped.info("step", step=step)
            finally:
                in_flight.release()
            acked[str(act.audit_id)] = time.monotonic()
            if i % trace_every == 0:
                traced.append(str(act.audit_id))

        async def entries() -> None:
            """Every entry recorded since the oldest action not seen yet, page by page, every 20 ms."""
            while not done.is_set() or len(entry_seen) < len(acked):
                unseen = [a for a in acked if a not in entry_seen]
                if not unseen:
                    await asyncio.sleep(0.02)
                    continue
                # From just before the oldest action not seen yet (its entry's time is taken after `began`, on the
                # same clock): a wider window only makes each round read more pages, and a round's length is part
                # of every lag measured.
                since = datetime.fromtimestamp(min(began[a] for a in unseen) - READ_MARGIN_S, UTC).isoformat()
                params = {"since": since, "sort": "time", "order": "asc", "limit": "500"}
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
        started = time.monotonic()
        count = int(rate * seconds)
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
    run.actions = count
    run.achieved_rate = count / elapsed
    run.entry_lags = [entry_seen[a] - acked[a] for a in acked if a in entry_seen]


async def one_run(witness_count: int, seconds: float, burst: int, bin_dir: Path | None) -> Run:
    name = f"bench_{uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-witnesses-") as home:
        witnesses = [
            Litewitness(bin_dir, Path(home) / f"w{i}", f"witness.bench/w{i}") for i in range(witness_count)
        ] if bin_dir else []  # fmt: skip
        try:
            async with _deployment(name, witnesses) as (base, secret, conn, projector):
                capacity = await _capacity(conn, name, burst)
                target = capacity / 2 / RECORDS_PER_ACTION
                run = Run(witness_count, capacity, target * RECORDS_PER_ACTION, 0.0, 0)
                cpu = [cpu_s(projector), sum(cpu_s(w.pid) for w in witnesses)]
                await _steady(name, base, secret, target, seconds, run)
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
    print(f"{'witnesses':>9} | {'capacity rec/s':>14} | {'steady rec/s':>12} | {'list p50 ms':>13} | "
          f"{'list p99 ms':>13} | {'trace p50 ms':>13} | {'trace p99 ms':>13} | {'cosign p50/p99':>17} | "
          "lost")  # fmt: skip
    for count in sorted({r.witnesses for r in runs}):
        mine = [r for r in runs if r.witnesses == count]
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
            "witness_cpu_s": statistics.median(r.witness_cpu_s for r in mine),
        }

        def ms(key: str, row: dict[str, object] = row) -> str:
            values = row[key]
            assert isinstance(values, list)
            if not values:
                return "—"
            return f"{statistics.median(values) * 1000:.0f}{_spread(values)}"

        cosign = f"{ms('cosign_p50')} / {ms('cosign_p99')}" if count else "—"
        print(f"{count:>9} | {row['capacity']:>14,.0f} | {row['steady']:>12,.0f} | {ms('list_p50'):>13} | "
              f"{ms('list_p99'):>13} | {ms('trace_p50'):>13} | {ms('trace_p99'):>13} | {cosign:>17} | "
              f"{row['never_seen']}")  # fmt: skip
        read_ms = statistics.median(_quantile(r.read_s, 0.5) for r in mine) * 1000
        print(f"{'':>9}   projector CPU {row['projector_cpu_s']:.1f} s, witnesses CPU {row['witness_cpu_s']:.1f} s "
              f"over the steady phase; the reader's list requests took {read_ms:.0f} ms "
              "p50")  # fmt: skip
        out[str(count)] = row
    if "0" in out and len(out) > 1:
        base, other = out["0"], out[max(out)]
        assert isinstance(base, dict)
        assert isinstance(other, dict)
        ratio = statistics.median(other["list_p99"]) / statistics.median(base["list_p99"])
        print(f"list p99 with witnesses ÷ without: {ratio:.2f}")
        out["p99_ratio_with_witnesses"] = ratio
    return out


async def main(seconds: float, runs: int, smoke: bool, out: Path) -> None:
    logs.configure("WARNING")
    bin_dir = tools()
    results: list[Run] = []
    burst = 200 if smoke else 12_000  # 60,000 records: most of them drained after publishing ends
    for n in range(runs):
        for count in (0, 2) if n % 2 == 0 else (2, 0):  # the order alternates: no variant always runs second
            results.append(await one_run(count, seconds, burst, bin_dir))
    print(f"end-to-end lag on {os.cpu_count()} cores, {seconds:.0f} s at half the measured capacity per run, "
          f"median of {runs} run(s)")  # fmt: skip
    figures = report(results)
    raw = [asdict(r) | {"entry_lags": len(r.entry_lags), "read_s": len(r.read_s)} for r in results]
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
    args = parser.parse_args()
    asyncio.run(main(3 if args.smoke else args.seconds, 1 if args.smoke else args.runs, args.smoke, args.json))
