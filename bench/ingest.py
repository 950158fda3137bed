"""The projector against the true ceiling — a COPY of exactly the rows it wrote — and the compliance checks against
the projector, on the realistic mix (`bench/mix.py`), side by side in one run on the local stack.

Per run, in fresh topics and schemas:
  1. publish N actions of the mix (start + outcome + 3 log lines each, ~5 % failed, a poison record, a re-send);
  2. project them with the tree and signed checkpoints on, as deployed (one process, both pipelines) into A;
  3. dump every table A holds rows in (`COPY (SELECT …) TO` binary) and COPY them into B, a fresh schema with the
     same migrations: projector ÷ that COPY, plus the entries-only COPY line;
  4. `verify --integrity` over A and `verify --read-model`'s comparison of A with B: records/s, ÷ the projector;
  5. `audit-projector replay` of the same topics into C, a fresh schema: records/s, ÷ that COPY;
  6. the floor of one Python process, no database: aiokafka reading the same topics as the projector's consumers
     do (both at once, the same fetch sizes), and reading them through the projector's own decode stage (decode,
     provenance, rows built): what the projector cannot beat, whatever it writes.
Beside the rates, the CPU seconds per 1,000 records each phase cost this process, PostgreSQL and Kafka (`bench/cpu.py`):
on a box they share, the projector's ceiling is set by their sum, not by its own process alone.
Each figure is the median of `--runs` runs, with the spread. Usage:
`python -m bench.ingest [--actions N] [--runs 3] [--smoke] [--json PATH]`.
"""

import argparse
import asyncio
import io
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import uuid4

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from audit_projector import logs
from audit_projector.compare import compare
from audit_projector.integrity import verify_integrity
from audit_projector.migrations import migrate
from audit_projector.pipeline.decoding import Provenance, decode_batch
from audit_projector.replay import catch_up, replay
from audit_projector.runtime import tune_gc
from audit_projector.state import ProjectorState
from audit_projector.topics import ensure_topics
from audit_schemas.checkpoint import NoteSigner
from bench import cpu
from bench import figures as figures_out
from bench.cpu import Cpu
from bench.mix import Published, publish_mix
from bench.projector_vs_copy import BOOTSTRAP, OWNER, bench_settings, drop_bench_schemas


@dataclass(frozen=True)
class Run:
    """One run's seconds and sizes."""

    records: int
    rows: int
    tables: int
    project_s: float
    copy_s: float
    copy_entries_s: float
    verify_s: float
    compare_s: float
    replay_s: float
    consume_s: float
    decode_s: float
    project_cpu: Cpu
    copy_cpu: Cpu
    replay_cpu: Cpu


async def _tables(conn: asyncpg.Connection, schema: str) -> list[tuple[str, int]]:
    """The tables (partitioned parents, not their partitions) of `schema` that hold rows, with their counts."""
    names = [
        r[0]
        for r in await conn.fetch(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                  AND c.relname <> 'schema_migrations' ORDER BY 1""",
            schema,
        )
    ]
    counted = [(t, int(await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{t}"'))) for t in names]
    return [(t, n) for t, n in counted if n]


async def _copy_write_set(conn: asyncpg.Connection, source: str, target: str) -> tuple[float, float, int, int, Cpu]:
    """COPY every table `source` holds rows in into `target`: seconds for all, seconds for audit_entries alone,
    rows, tables, CPU. Dumped first (binary), so only the loading is timed."""
    tables = await _tables(conn, source)
    dumps: dict[str, bytes] = {}
    for table, _ in tables:
        out = io.BytesIO()
        await conn.copy_from_query(f'SELECT * FROM "{source}"."{table}"', output=out, format="binary")
        dumps[table] = out.getvalue()
    seconds = entries = 0.0
    before = cpu.sample()
    for table, _ in tables:
        started = time.perf_counter()
        await conn.copy_to_table(table, source=io.BytesIO(dumps[table]), schema_name=target, format="binary")
        took = time.perf_counter() - started
        seconds += took
        entries += took if table == "audit_entries" else 0.0
    return seconds, entries, sum(n for _, n in tables), len(tables), cpu.sample() - before


async def _read_all(topic: str, partitions: int, decoding: bool) -> int:
    """Read every record of `topic` as the projector's consumer is set up (but assigned, no group), through its
    decode stage when `decoding`; records read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        total, read = sum((await consumer.end_offsets(assigned)).values()), 0
        provenance = Provenance()
        for _ in range(10_000_000):  # bounded
            if read >= total:
                break
            fetched = await consumer.getmany(timeout_ms=500, max_records=2000)
            read += sum(len(v) for v in fetched.values())
            if decoding and fetched:
                await decode_batch(fetched, provenance)
        return read
    finally:
        await consumer.stop()


async def _floor(topics: list[str], partitions: int, decoding: bool) -> tuple[float, int]:
    """Both topics at once, as the projector's two pipelines read them: seconds and records."""
    started = time.perf_counter()
    counts = await asyncio.gather(*(_read_all(t, partitions, decoding) for t in topics))
    return time.perf_counter() - started, sum(counts)


async def one_run(actions: int) -> Run:
    name = f"bench_{uuid4().hex[:8]}"
    signer, key = NoteSigner.generate("audit-trail")
    settings = bench_settings(name).model_copy(update={"checkpoint_key": SecretStr(key)})
    copy_schema = f"{name}_b"
    topics = [*settings.topics, settings.dead_letter_topic, settings.checkpoint_topic]
    await migrate(OWNER, settings.db_schema, control_schema=settings.control_schema)
    await migrate(OWNER, copy_schema, control_schema=settings.control_schema, kind="shadow")
    await ensure_topics(BOOTSTRAP, topics, settings.partitions)
    published: Published = await publish_mix(BOOTSTRAP, settings.audit_topic, settings.execution_log_topic, actions)
    before = cpu.sample()
    projected = await catch_up(settings, ProjectorState(), timeout_s=3600)
    project_cpu = cpu.sample() - before
    conn = await asyncpg.connect(OWNER)
    try:
        copy_s, entries_s, rows, tables, copy_cpu = await _copy_write_set(conn, settings.db_schema, copy_schema)
        await conn.execute(f'SET search_path = "{settings.db_schema}"')
        started = time.perf_counter()
        report = await verify_integrity(conn, settings.control_schema, [signer.verifier_key], settings.log_name)
        verify_s = time.perf_counter() - started
        await conn.execute("RESET search_path")
        assert report.found == 0, [str(f) for f in report.findings[:5]]
        started = time.perf_counter()
        compared = await compare(conn, settings.db_schema, copy_schema)
        compare_s = time.perf_counter() - started
        assert compared.differences == [], compared.differences[:5]
        # `audit-projector replay` of the same history into a fresh schema (its own group, as a rebuild runs).
        replay_schema = f"{name}_c"
        before = cpu.sample()
        rebuilt = await replay(
            settings.model_copy(update={"db_schema": replay_schema, "group_id": f"{name}-replay"}), OWNER, 3600
        )
        replay_cpu = cpu.sample() - before
        assert rebuilt.records == published.records, (rebuilt.records, published.records)
        await drop_bench_schemas(conn, name)
        consume_s, consumed = await _floor(list(settings.topics), settings.partitions, decoding=False)
        decode_s, decoded = await _floor(list(settings.topics), settings.partitions, decoding=True)
        assert consumed == decoded == published.records, (consumed, decoded, published.records)
    finally:
        await conn.close()
    assert projected.records == published.records, (projected.records, published.records)
    return Run(
        published.records,
        rows,
        tables,
        projected.seconds,
        copy_s,
        entries_s,
        verify_s,
        compare_s,
        rebuilt.seconds,
        consume_s,
        decode_s,
        project_cpu,
        copy_cpu,
        replay_cpu,
    )


def _median(runs: list[Run], value: str) -> tuple[float, float]:
    values = [getattr(r, value) for r in runs]
    middle = statistics.median(values)
    return middle, (max(values) - min(values)) / middle if middle else 0.0


def report(runs: list[Run]) -> dict[str, object]:
    records, rows = runs[0].records, runs[0].rows
    rates = {}
    for label, value in (
        ("projector (tree and checkpoints on)", "project_s"),
        ("COPY of its write set", "copy_s"),
        ("COPY of audit_entries alone", "copy_entries_s"),
        ("verify --integrity", "verify_s"),
        ("verify --read-model (comparison)", "compare_s"),
        ("audit-projector replay", "replay_s"),
        ("floor: aiokafka reading it, nothing else", "consume_s"),
        ("floor: reading + the projector's decode", "decode_s"),
    ):
        seconds, spread = _median(runs, value)
        rates[label] = {"seconds": seconds, "records_per_s": records / seconds if seconds else 0.0, "spread": spread}
    project = rates["projector (tree and checkpoints on)"]["records_per_s"]
    copy = rates["COPY of its write set"]["records_per_s"]
    print(f"{os.cpu_count()} cores; {records:,} records → {rows:,} rows in {runs[0].tables} tables; {len(runs)} runs")
    print(f"{'':42} {'seconds':>8} {'records/s':>10} {'spread':>7} {'÷ COPY':>7} {'÷ projector':>11}")
    for label, r in rates.items():
        per_s = r["records_per_s"]
        print(
            f"{label:42} {r['seconds']:>8.2f} {per_s:>10,.0f} {r['spread']:>7.0%} {per_s / copy:>7.2f} "
            f"{per_s / project:>11.2f}"
        )
    print(f"CPU seconds per 1,000 records (median) {'this process':>14} {'PostgreSQL':>11} {'Kafka':>7} {'total':>7}")
    spent = {}
    for label, value in (
        ("projector (tree and checkpoints on)", "project_cpu"),
        ("COPY of its write set", "copy_cpu"),
        ("audit-projector replay", "replay_cpu"),
    ):
        here, postgres, kafka = (
            statistics.median(getattr(getattr(r, value), part) for r in runs) * 1000 / records
            for part in ("here", "postgres", "kafka")
        )
        spent[label] = {"here": here, "postgres": postgres, "kafka": kafka}
        print(f"{label:37} {here:>14.3f} {postgres:>11.3f} {kafka:>7.3f} {here + postgres + kafka:>7.3f}")
    return {"records": records, "rows": rows, "runs": [asdict(r) for r in runs], "rates": rates, "cpu": spent}


async def main(actions: int, runs: int, smoke: bool, out: Path) -> None:
    logs.configure("WARNING")
    tune_gc()  # as `audit-projector run` and `replay` do
    done = [await one_run(actions) for _ in range(runs)]
    figures = report(done)
    figures_out.write(out, {"smoke": smoke, **figures})
    print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=20_000, help="Actions (5 records each) per run.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="300 actions, one run: seconds.")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("ingest"))
    args = parser.parse_args()
    actions, runs = (300, 1) if args.smoke else (args.actions, args.runs)
    asyncio.run(main(actions, runs, args.smoke, args.json))
