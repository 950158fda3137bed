"""Producer latency and cost against its true floor, side by side in one run, on the local stack.

The floor is raw aiokafka with no linger awaiting the same two `acks=all` sends of an action (idempotent, the same
start and outcome bytes) one after the other, as `audit.action()` must (the start acknowledged before the body, the
outcome acknowledged after it). For concurrency 1, 8 and 64: actions/s, p50 and p99 latency per action, and CPU µs
per action in this process (the broker runs in its own). Then what sealing personal fields adds (the key service in
its own process, a warm and a cold key cache). Then execution-log lines/s through the shipper vs raw
sends of the same bytes. Every figure is the median of `--runs` runs, with their spread, and a ratio to raw's.

Usage: `python -m bench.producer_latency [--actions N] [--runs 3] [--smoke] [--json PATH]`. Fresh topics each run.
"""

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import uuid4

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr
from tests.factories import action_event, log_event, outcome_event

from audit_producer import Actor, AuditProducer, Entity, RequestContext
from audit_producer.config import Settings
from audit_schemas import LogLevel, decode, encode, kafka_headers
from bench import figures as figures_out
from bench.keyservice import KeyService, key_service
from bench.projector_vs_copy import BOOTSTRAP

CONCURRENCY = (1, 8, 64)
SEALING_SOURCE = "bench-sealing"


@dataclass(frozen=True)
class Figures:
    """One configuration's median over the runs, and the spread of its throughput."""

    name: str
    concurrency: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    spread: float
    """(max - min) / median of actions/s over the runs."""


Action = Callable[[], Awaitable[None]]


async def _measure(action: Action, count: int, concurrency: int) -> tuple[float, list[float], float]:
    """Run `count` actions from `concurrency` workers; wall seconds, each action's seconds, CPU seconds."""
    latencies: list[float] = []
    per_worker = max(1, count // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.perf_counter()
            await action()
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall, latencies, time.process_time() - cpu


def _figures(name: str, concurrency: int, runs: list[tuple[float, list[float], float]]) -> Figures:
    rates = [len(lat) / wall for wall, lat, _ in runs]
    median = statistics.median(rates)
    everything = sorted(x for _, lat, _ in runs for x in lat)
    return Figures(
        name=name,
        concurrency=concurrency,
        per_second=median,
        p50_ms=everything[len(everything) // 2] * 1000,
        p99_ms=everything[min(len(everything) - 1, int(len(everything) * 0.99))] * 1000,
        cpu_us=statistics.median(cpu / len(lat) for _, lat, cpu in runs) * 1e6,
        spread=(max(rates) - min(rates)) / median if median else 0.0,
    )


async def _topics(names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 6, 1) for n in names])
    finally:
        await admin.close()


async def _drop(names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


@dataclass(frozen=True)
class _Record:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _pair() -> tuple[_Record, _Record]:
    """A start and its outcome as the library encodes them, for raw sends of the same bytes."""
    start = action_event("bench-1", action="update")
    done = outcome_event(start)
    key = (start.partitionkey or "").encode()
    return _Record(key, encode(start), kafka_headers(start)), _Record(key, encode(done), kafka_headers(done))


async def _raw_run(topic: str, count: int, concurrency: int) -> tuple[float, list[float], float]:
    start, done = _pair()
    raw = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=0)
    await raw.start()
    try:

        async def raw_action() -> None:
            await raw.send_and_wait(topic, start.value, key=start.key, headers=start.headers)
            await raw.send_and_wait(topic, done.value, key=done.key, headers=done.headers)

        await _measure(raw_action, min(200, count), concurrency)  # warm up connections and metadata
        return await _measure(raw_action, count, concurrency)
    finally:
        await raw.stop()


async def _library_run(topics: list[str], count: int, concurrency: int) -> tuple[float, list[float], float]:
    settings = Settings(
        bootstrap_servers=BOOTSTRAP,
        audit_topic=topics[0],
        execution_log_topic=topics[1],
        spool_dir=Path(tempfile.mkdtemp(prefix="bench-spool-")),
    )
    entity, actor = Entity(id="bench-1", model="resource"), Actor.user("u-bench", "Bench")
    async with AuditProducer("bench", settings) as audit:

        async def lib_action() -> None:
            async with audit.action("update", entity=entity, actor=actor, tenant="acme"):
                pass

        await _measure(lib_action, min(200, count), concurrency)
        return await _measure(lib_action, count, concurrency)


async def actions(count: int, runs: int) -> list[Figures]:
    """Raw aiokafka's two awaited sends vs `audit.action()` around an empty body, at each concurrency."""
    out: list[Figures] = []
    for concurrency in CONCURRENCY:
        raw_runs, lib_runs = [], []
        for _ in range(runs):
            name = f"bench_{uuid4().hex[:8]}"
            topics = [f"{name}.audit", f"{name}.logs"]
            await _topics(topics)
            raw_runs.append(await _raw_run(topics[0], count, concurrency))
            lib_runs.append(await _library_run(topics, count, concurrency))
            await _drop(topics)
        out += [_figures("raw aiokafka", concurrency, raw_runs), _figures("audit.action()", concurrency, lib_runs)]
    return out


async def _signing_run(
    topics: list[str], count: int, concurrency: int, service: KeyService, subjects: int | None
) -> tuple[float, list[float], float]:
    """`audit.action()` for a person with a request (address and agent), signed; sealed through the key service
    unless `subjects` is None. `subjects` distinct people in turn, the cache cold at the start (each person's first
    action fetches a key)."""
    settings = Settings(
        bootstrap_servers=BOOTSTRAP,
        audit_topic=topics[0],
        execution_log_topic=topics[1],
        spool_dir=Path(tempfile.mkdtemp(prefix="bench-spool-")),
        signing_key=SecretStr(service.signing_key),
        key_service_url=None if subjects is None else service.url,
    )
    people = [Actor.user(f"u-{i:06d}", f"Person {i}") for i in range(subjects or 1)]
    request = RequestContext(request_id="req-1", client_ip="203.0.113.9", user_agent="bench/1.0 (X11; Linux)")
    entity = Entity(id="bench-1", model="resource")
    turn = itertools.count()
    async with AuditProducer(SEALING_SOURCE, settings) as audit:

        async def act() -> None:
            actor = people[next(turn) % len(people)]
            async with audit.action("update", entity=entity, actor=actor, tenant="acme", request=request):
                pass

        if subjects is None or subjects == 1:
            await _measure(act, min(200, count), concurrency)  # warm: connections, and the one key
        return await _measure(act, count, concurrency)


async def sealing(count: int, runs: int, subjects: int) -> tuple[list[Figures], str]:
    """What sealing adds per action: signed actions for a person with a request, unsealed vs sealed with a warm
    key cache (one person) vs a cold one (`subjects` people, each first action fetching its key), at concurrency
    1 and 64; the key service in its own process."""
    async with key_service(SEALING_SOURCE) as service:
        if service is None:
            return [], "sealing: skipped (needs AUDIT_POSTGRES_ADMIN_DSN for the key store's schema)"
        out: list[Figures] = []
        for concurrency in (1, 64):
            plain, warm, cold = [], [], []
            for _ in range(runs):
                name = f"bench_{uuid4().hex[:8]}"
                topics = [f"{name}.audit", f"{name}.logs"]
                await _topics(topics)
                plain.append(await _signing_run(topics, count, concurrency, service, None))
                warm.append(await _signing_run(topics, count, concurrency, service, 1))
                cold.append(await _signing_run(topics, count, concurrency, service, subjects))
                await _drop(topics)
            out += [
                _figures("signed, not sealed", concurrency, plain),
                _figures("sealed, warm cache", concurrency, warm),
                _figures(f"sealed, {subjects:,} people cold", concurrency, cold),
            ]
    lines = [f"{'':28} {'conc':>4} {'per s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7} {'+CPU µs':>8} {'÷ /s':>6}"]
    for r in out:
        base = next(b for b in out if b.concurrency == r.concurrency and b.name == "signed, not sealed")
        lines.append(
            f"{r.name:28} {r.concurrency:>4} {r.per_second:>9,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.cpu_us:>7.0f} {r.cpu_us - base.cpu_us:>8.0f} {r.per_second / base.per_second:>6.2f}"
        )
    head = "sealing (a person with a request: 4 fields sealed per start; signed either way):"
    return out, head + "\n" + "\n".join(lines)


async def log_lines(count: int, runs: int) -> list[Figures]:
    """Execution-log lines/s: the shipper (what `audit.logs` does per line) vs raw sends of the same bytes."""
    line = log_event(action_event("bench-logs"), "step", n=1)
    value, key = encode(line), line.data.trace_id.encode()
    raw_runs, lib_runs = [], []
    for _ in range(runs):
        name = f"bench_{uuid4().hex[:8]}"
        topics = [f"{name}.audit", f"{name}.logs"]
        await _topics(topics)
        raw = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=5)
        await raw.start()
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            futures = [await raw.send(topics[1], value, key=key) for _ in range(count)]
            await asyncio.gather(*futures)
            raw_runs.append((time.perf_counter() - wall, [0.0] * count, time.process_time() - cpu))
        finally:
            await raw.stop()
        settings = Settings(
            bootstrap_servers=BOOTSTRAP,
            audit_topic=topics[0],
            execution_log_topic=topics[1],
            spool_dir=Path(tempfile.mkdtemp(prefix="bench-spool-")),
            log_queue_size=max(10_000, count),
        )
        async with AuditProducer("bench", settings) as audit:
            trace = line.data.trace_id
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(count):
                audit.logs.submit(audit.logs.make_line(trace, "acme", LogLevel.INFO, "bench", "step", {"n": i}))
            for _ in range(100_000):  # bounded: until every line is acknowledged
                if audit.logs.stats()["shipped"] >= count:
                    break
                await asyncio.sleep(0.001)
            lib_runs.append((time.perf_counter() - wall, [0.0] * count, time.process_time() - cpu))
        await _drop(topics)
    return [_figures("raw aiokafka (linger 5)", 0, raw_runs), _figures("audit.logs shipper", 0, lib_runs)]


def _table(rows: list[Figures], baseline: str) -> str:
    floor = {r.concurrency: r for r in rows if r.name.startswith("raw")}
    lines = [
        f"{'':24} {'conc':>4} {'per s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7} {'spread':>7} "
        f"{'÷ raw /s':>8} {'p50 ÷ raw':>9}"
    ]
    for r in rows:
        base = floor[r.concurrency]
        lines.append(
            f"{r.name:24} {r.concurrency or '-':>4} {r.per_second:>9,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.cpu_us:>7.0f} {r.spread:>7.0%} {r.per_second / base.per_second:>8.2f} "
            f"{(r.p50_ms / base.p50_ms) if base.p50_ms else 0:>9.2f}"
        )
    return f"{baseline}\n" + "\n".join(lines)


def check_cost(iterations: int) -> tuple[float, float]:
    """CPU µs per action of what the library adds to every publish for the trust guarantees: encoding the start
    and the outcome once, and the check of those exact bytes with the projector's own `decode`."""
    start = action_event("bench-1", action="update", tenant="acme")
    outcome = outcome_event(start)
    began = time.process_time()
    for _ in range(iterations):
        encoded = (encode(start), encode(outcome))
    encode_us = (time.process_time() - began) / iterations * 1e6
    began = time.process_time()
    for _ in range(iterations):
        decode(encoded[0])
        decode(encoded[1])
    return encode_us, (time.process_time() - began) / iterations * 1e6


async def main(count: int, runs: int, smoke: bool, out: Path) -> None:
    import os

    print(f"{os.cpu_count()} cores; {count:,} actions per run, {runs} runs per figure (median)", flush=True)
    acted = await actions(count, runs)
    print(_table(acted, "actions (start + outcome, both acknowledged):"), flush=True)
    shipped = await log_lines(count * 5, runs)
    print(_table(shipped, "execution-log lines:"), flush=True)
    sealed, sealing_table = await sealing(count, runs, 64 if smoke else 1000)
    print(sealing_table, flush=True)
    encode_us, check_us = check_cost(200 if smoke else 5000)
    library = next(r for r in acted if r.concurrency == 1 and not r.name.startswith("raw"))
    print(
        f"per action, the start and the outcome encoded once: {encode_us:.0f} µs CPU; the check of those exact bytes "
        f"with the projector's decode: {check_us:.0f} µs CPU ({check_us / library.cpu_us:.0%} of the library's "
        f"{library.cpu_us:.0f} µs at concurrency 1; the validators are built once, at import)",
        flush=True,
    )
    figures_out.write(
        out,
        {
            "smoke": smoke,
            "actions": [asdict(r) for r in acted],
            "logs": [asdict(r) for r in shipped],
            "sealing": [asdict(r) for r in sealed],
            "encode_us": encode_us,
            "check_us": check_us,
        },
    )
    print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="A few hundred actions, one run: seconds.")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("producer_latency"))
    args = parser.parse_args()
    count, runs = (128, 1) if args.smoke else (args.actions, args.runs)
    asyncio.run(main(count, runs, args.smoke, args.json))
