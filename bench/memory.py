"""Memory as the history grows: peak RSS of `audit-projector run` and of `audit-projector replay`, each its own
process, projecting the realistic mix (`bench/mix.py`) at a small and a large size (default 1 M and 5 M records).
Flat means the large size's peak is about the small one's. Usage:
`python -m bench.memory [--small N] [--large N] [--smoke] [--json PATH]` (records; the mix has 5 per action).
"""

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import uuid4

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit_projector.compare import stored_offsets
from audit_projector.migrations import migrate
from audit_projector.topics import ensure_topics
from bench import figures as figures_out
from bench.mix import publish_mix
from bench.projector_vs_copy import BOOTSTRAP, OWNER, drop_bench_schemas
from bench.projectors import projector_env

PARTITIONS = 6


@dataclass(frozen=True)
class Peak:
    records: int
    process: str
    peak_rss_mib: float
    seconds: float


def _rss_kib(pid: int) -> int | None:
    """The process's resident set now (VmRSS), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


async def _end_offsets(topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(parts)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _watch(proc: asyncio.subprocess.Process, done: asyncio.Event, every_s: float = 0.1) -> int:
    """Sample the process's RSS until `done` is set or it exits; the highest sample, in KiB."""
    peak = 0
    while not done.is_set() and proc.returncode is None:
        peak = max(peak, _rss_kib(proc.pid) or 0)
        await asyncio.sleep(every_s)
    return peak


def _env(name: str, schema: str) -> dict[str, str]:
    return {**projector_env(name, schema), "AUDIT_PROJECTOR_LOG_LEVEL": "WARNING"}


async def _projector(name: str, records: int, ends: dict[tuple[str, int], int]) -> Peak:
    """`audit-projector run` until it stored every end offset; its peak RSS."""
    schema = f"{name}_a"
    await migrate(OWNER, schema, control_schema=f"{name}_control")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "audit_projector", "run", env=_env(name, schema),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    done = asyncio.Event()
    watcher = asyncio.create_task(_watch(proc, done))
    started = time.perf_counter()
    conn = await asyncpg.connect(OWNER)
    try:
        for _ in range(36_000):  # bounded: an hour
            stored = await stored_offsets(conn, schema, f"{name}-group")
            if all(stored.get(tp, 0) >= end for tp, end in ends.items()):
                break
            if proc.returncode is not None:
                raise RuntimeError(f"the projector exited with {proc.returncode}")
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
        done.set()
        peak = await watcher
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 60)
    return Peak(records, "projector", peak / 1024, seconds)


async def _replay(name: str, records: int) -> Peak:
    """`audit-projector replay` of the same topics into a fresh schema, to its end; its peak RSS."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "audit_projector", "replay", "--schema", f"{name}_r", "--timeout", "3600",
        env=_env(name, f"{name}_a"), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    done = asyncio.Event()
    watcher = asyncio.create_task(_watch(proc, done))
    started = time.perf_counter()
    code = await proc.wait()
    seconds = time.perf_counter() - started
    done.set()
    peak = await watcher
    if code != 0:
        raise RuntimeError(f"the replay exited with {code}")
    return Peak(records, "replay", peak / 1024, seconds)


async def one_size(records: int) -> list[Peak]:
    name = f"bench_{uuid4().hex[:8]}"
    topics = [f"{name}.audit", f"{name}.logs", f"{name}.dlq", f"{name}.checkpoints"]
    await ensure_topics(BOOTSTRAP, topics, PARTITIONS)
    published = await publish_mix(BOOTSTRAP, topics[0], topics[1], max(1, records // 5))
    ends = await _end_offsets(topics[:2])
    try:
        return [await _projector(name, published.records, ends), await _replay(name, published.records)]
    finally:
        conn = await asyncpg.connect(OWNER)
        try:
            await drop_bench_schemas(conn, name)
        finally:
            await conn.close()


async def main(small: int, large: int, smoke: bool, out: Path) -> None:
    peaks = await one_size(small) + await one_size(large)
    print(f"{os.cpu_count()} cores; the realistic mix at {small:,} and {large:,} records")
    print(f"{'':12} {'records':>10} {'peak RSS MiB':>13} {'seconds':>8} {'÷ smaller':>10}")
    for p in peaks:
        base = next(b for b in peaks if b.process == p.process)
        print(
            f"{p.process:12} {p.records:>10,} {p.peak_rss_mib:>13.0f} {p.seconds:>8.1f} "
            f"{p.peak_rss_mib / base.peak_rss_mib:>10.2f}"
        )
    figures_out.write(out, {"smoke": smoke, "peaks": [asdict(p) for p in peaks]})
    print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=5_000_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 and 10,000 records: under a minute.")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("memory"))
    args = parser.parse_args()
    small, large = (2_000, 10_000) if args.smoke else (args.small, args.large)
    asyncio.run(main(small, large, args.smoke, args.json))
