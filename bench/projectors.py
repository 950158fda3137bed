"""One projector process against three in one consumer group, on the realistic mix (`bench/mix.py`), tree and
signed checkpoints on: wall-clock records/s, the projectors' CPU seconds, records per projector-CPU-second, and
whether the rebalance kept every guarantee (each action once, every log line, the poison record dead-lettered,
the re-send dropped, `verify --integrity` silent).

The second and third processes join one and two seconds after the first, so partitions move mid-stream. On a
machine with fewer cores than processes plus PostgreSQL and Kafka, three projectors measure contention rather than
scale: the figure to read is records per CPU-second (how much work a rebalance and smaller per-process batches
cost), not the wall-clock ratio. Usage: `python -m bench.projectors [--actions N] [--runs 3] [--smoke] [--json P]`.
"""

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import uuid4

import asyncpg

from audit_projector import logs
from audit_projector.integrity import verify_integrity
from audit_projector.migrations import migrate
from audit_projector.topics import ensure_topics
from audit_schemas.checkpoint import NoteSigner
from bench import figures as figures_out
from bench.cpu import cpu_s
from bench.mix import LINES_PER_ACTION, publish_mix
from bench.projector_vs_copy import BOOTSTRAP, OWNER, PROJECTOR

PARTITIONS = 6


@dataclass(frozen=True)
class Run:
    """One run of `processes` projectors over `records` records."""

    processes: int
    records: int
    seconds: float
    cpu_s: float
    correct: bool


def projector_env(name: str, schema: str | None = None) -> dict[str, str]:
    """Environment for an `audit-projector` process on the bench's own topics (`<name>.*`), schema (default
    `name`) and control schema, nothing inherited from the caller's AUDIT_PROJECTOR_* settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUDIT_PROJECTOR_")},
        "AUDIT_PROJECTOR_ENVIRONMENT": "development",  # the local stack has one broker
        "AUDIT_PROJECTOR_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "AUDIT_PROJECTOR_DATABASE_URL": PROJECTOR,
        "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": OWNER,
        "AUDIT_PROJECTOR_DB_SCHEMA": schema or name,
        "AUDIT_PROJECTOR_CONTROL_SCHEMA": f"{name}_control",
        "AUDIT_PROJECTOR_GROUP_ID": f"{name}-group",
        "AUDIT_PROJECTOR_AUDIT_TOPIC": f"{name}.audit",
        "AUDIT_PROJECTOR_EXECUTION_LOG_TOPIC": f"{name}.logs",
        "AUDIT_PROJECTOR_DEAD_LETTER_TOPIC": f"{name}.dlq",
        "AUDIT_PROJECTOR_CHECKPOINT_TOPIC": f"{name}.checkpoints",
    }


def _env(name: str, key: str) -> dict[str, str]:
    return {
        **projector_env(name),
        "AUDIT_PROJECTOR_CHECKPOINT_KEY": key,
        "AUDIT_PROJECTOR_HEALTH_PORT": "0",
        "AUDIT_PROJECTOR_SESSION_TIMEOUT_MS": "6000",
        "AUDIT_PROJECTOR_HEARTBEAT_INTERVAL_MS": "500",
    }


async def _projected(conn: asyncpg.Connection, group: str) -> int:
    """Records the group has stored offsets past (fresh topics start at 0)."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM projector_offsets WHERE consumer_group = $1", group
        )
    )


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`audit-projector run` as a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "audit_projector", "run", "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def one_run(processes: int, actions: int) -> Run:
    name = f"bench_{uuid4().hex[:8]}"
    signer, key = NoteSigner.generate("audit-trail")
    env = _env(name, key)
    topics = [env[f"AUDIT_PROJECTOR_{t}_TOPIC"] for t in ("AUDIT", "EXECUTION_LOG", "DEAD_LETTER", "CHECKPOINT")]
    await migrate(OWNER, name, control_schema=f"{name}_control")
    await ensure_topics(BOOTSTRAP, topics, PARTITIONS)
    published = await publish_mix(BOOTSTRAP, topics[0], topics[1], actions)
    conn = await asyncpg.connect(OWNER, server_settings={"search_path": name})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = time.perf_counter()
        for i in range(processes):
            if i:
                await asyncio.sleep(1.0)  # join mid-stream: the group rebalances under load
            procs.append(_start(env))
        deadline = time.monotonic() + 1800
        while await _projected(conn, env["AUDIT_PROJECTOR_GROUP_ID"]) < published.records:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{processes} projector(s) did not finish ({[p.poll() for p in procs]})")
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
        spent = sum(cpu_s(p.pid) for p in procs)
        counted = await conn.fetchrow("SELECT count(*), count(DISTINCT audit_id) FROM audit_entries")
        assert counted is not None
        entries, distinct = counted
        lines = await conn.fetchval("SELECT count(*) FROM execution_logs")
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        report = await verify_integrity(conn, f"{name}_control", [signer.verifier_key], "audit-trail")
        correct = (entries, distinct, lines, dead, report.found) == (
            actions,
            actions,
            actions * LINES_PER_ACTION,
            1,
            0,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for schema in (name, f"{name}_control"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return Run(processes, published.records, seconds, spent, correct)


def report(runs: list[Run]) -> dict[str, object]:
    """Print the table (medians with their spread) and return the figures."""
    cores = os.cpu_count()
    print(f"projectors on {cores} cores, {runs[0].records:,} records per run, {PARTITIONS} partitions")
    print(f"{'processes':>9} {'records/s':>16} {'CPU s':>12} {'records/CPU-s':>18} {'÷ one':>7} {'correct':>8}")
    rates: dict[str, dict[str, float]] = {}
    for n in sorted({r.processes for r in runs}):
        mine = [r for r in runs if r.processes == n]
        wall = [r.records / r.seconds for r in mine]
        per_cpu = [r.records / r.cpu_s for r in mine]
        cpu = [r.cpu_s for r in mine]
        rates[str(n)] = {
            "records_per_s": statistics.median(wall),
            "records_per_s_spread": max(wall) - min(wall),
            "cpu_s": statistics.median(cpu),
            "records_per_cpu_s": statistics.median(per_cpu),
            "records_per_cpu_s_spread": max(per_cpu) - min(per_cpu),
            "correct": float(all(r.correct for r in mine)),
        }
    one = rates["1"]
    for count, r in rates.items():
        print(
            f"{count:>9} {r['records_per_s']:>9,.0f} ±{r['records_per_s_spread']:>5,.0f} {r['cpu_s']:>12.1f} "
            f"{r['records_per_cpu_s']:>11,.0f} ±{r['records_per_cpu_s_spread']:>5,.0f} "
            f"{r['records_per_s'] / one['records_per_s']:>7.2f} {'yes' if r['correct'] else 'NO':>8}"
        )
    return {"cores": cores, "partitions": PARTITIONS, "runs": [asdict(r) for r in runs], "rates": rates}


async def main(actions: int, runs: int, smoke: bool, out: Path) -> None:
    logs.configure("WARNING")
    done = [await one_run(n, actions) for _ in range(runs) for n in (1, 3)]
    figures = report(done)
    figures_out.write(out, {"smoke": smoke, **figures})
    print(f"written to {out}")
    if not all(r.correct for r in done):
        raise SystemExit("a run lost, doubled or mis-verified records")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=20_000, help="Actions (5 records each) per run.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="300 actions, one run each: seconds.")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("projectors"))
    args = parser.parse_args()
    actions, runs = (300, 1) if args.smoke else (args.actions, args.runs)
    asyncio.run(main(actions, runs, args.smoke, args.json))
