"""The projector against the tool a user would pick instead: Kafka Connect (standalone, the broker's own
`connect-runtime` jars) with Debezium's JDBC sink, on the same start events in the same run.

Per run, in fresh topics and schemas: N action-started events go to the projector's topic, and the very entries
the projector makes of them (`audit_projector.rows.entry_row`) go, as JsonConverter records with their schema, to
the peer's topic. The projector (Merkle tree and signed checkpoints on) projects into a fresh schema; the peer
writes into a plain table with the columns and every index of `audit_entries`, for each of batch 500 and 2,000 and
1 and 2 tasks (its best is kept). Both are timed from their first stored row to the last. Prints projector ÷ peer;
writes the peer's full connector and worker configuration to the JSON. Usage:
`python -m bench.peer [--events N] [--runs 3] [--smoke] [--json PATH]`. Needs `deploy/local/tools.sh debezium`.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from tests.factories import action_event

from audit_projector import logs
from audit_projector.config import Settings
from audit_projector.migrations import migrate
from audit_projector.replay import catch_up
from audit_projector.rows import ENTRY_COLUMNS, Coordinates, entry_row
from audit_projector.state import ProjectorState
from audit_projector.topics import ensure_topics
from audit_schemas import encode, kafka_headers
from audit_schemas.checkpoint import NoteSigner
from bench import figures as figures_out
from bench.projector_vs_copy import BOOTSTRAP, OWNER, PROJECTOR

CACHE = Path(
    os.environ.get("AUDIT_STACK_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audit-trail"
)
KAFKA_LIBS = CACHE / "kafka-4.1.1" / "libs"
PLUGINS = Path(os.environ.get("AUDIT_DEBEZIUM_PLUGINS") or CACHE / "tools" / "debezium-3.6.0.Final")
"""Kafka Connect's plugin path (`deploy/local/tools.sh debezium` prints it)."""
PG = os.environ.get("AUDIT_PEER_JDBC_URL", "jdbc:postgresql://127.0.0.1:15432/audit")

# Connect types of the entry columns (timestamps as the Timestamp logical type, bytes base64 in JSON).
_TYPES = {"occurred_at": "timestamp", "schema_version": "int32", "kafka_partition": "int32", "kafka_offset": "int64",
          "content_digest": "bytes"}  # fmt: skip


def _schema() -> dict[str, Any]:
    fields = []
    for column in ENTRY_COLUMNS:
        kind = _TYPES.get(column, "string")
        field: dict[str, Any] = {"field": column, "optional": column not in ("occurred_at", "audit_id")}
        if kind == "timestamp":
            field |= {"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "version": 1}
        else:
            field["type"] = kind
        fields.append(field)
    return {"type": "struct", "name": "audit_entry", "optional": False, "fields": fields}


def _payload(values: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, value in zip(ENTRY_COLUMNS, values, strict=True):
        if isinstance(value, datetime):
            value = int(value.timestamp() * 1000)
        elif isinstance(value, UUID):
            value = str(value)
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        elif value is not None and not isinstance(value, int | str):
            value = str(value)
        out[column] = value
    return out


async def _publish(events: int, projector_topic: str, peer_topic: str) -> None:
    """The same start events to the projector's topic, and their entries as JsonConverter records to the peer's."""
    schema = _schema()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(events):
            event = action_event(f"e-{i % 500}")
            key = (event.partitionkey or "").encode()
            futures.append(await producer.send(projector_topic, encode(event), key=key, headers=kafka_headers(event)))
            row = entry_row(event, Coordinates(projector_topic, 0, i)).values
            value = json.dumps({"schema": schema, "payload": _payload(row)}).encode()
            futures.append(await producer.send(peer_topic, value, key=key))
        for future in futures:
            await future
    finally:
        await producer.stop()


async def _peer_table(conn: asyncpg.Connection, model: str, schema: str) -> None:
    """A plain table with `audit_entries`' columns and every one of its indexes (the peer cannot write a
    partitioned table with row-level security: it would need our migrations' roles)."""
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(f"CREATE TABLE {schema}.audit_entries (LIKE {model}.audit_entries INCLUDING DEFAULTS)")
    for (definition,) in await conn.fetch(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'audit_entries'", model
    ):
        on = f"ON {model}.audit_entries"
        await conn.execute(definition.replace(" ON ONLY ", " ON ").replace(on, f"ON {schema}.audit_entries"))


@dataclass(frozen=True)
class Peer:
    batch: int
    tasks: int
    seconds: float
    config: dict[str, str]


@contextlib.asynccontextmanager
async def _connect(config: dict[str, str], worker: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """Kafka Connect standalone with one connector, its log in a file; stopped after the block."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    (workdir / "worker.properties").write_text("".join(f"{k}={v}\n" for k, v in worker.items()))
    (workdir / "connector.properties").write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    log = (workdir / "connect.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        "java", "-Xmx1g", "-cp", f"{KAFKA_LIBS}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
        str(workdir / "worker.properties"), str(workdir / "connector.properties"),
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        if proc.returncode is None:
            proc.kill()
        log.close()


async def _run_peer(model: str, topic: str, events: int, batch: int, tasks: int) -> Peer:
    schema = f"bench_peer_{uuid4().hex[:8]}"
    conn = await asyncpg.connect(OWNER)
    try:
        await _peer_table(conn, model, schema)
        config = {
            "name": f"{schema}-sink",
            "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
            "tasks.max": str(tasks),
            "topics": topic,
            "connection.url": f"{PG}?stringtype=unspecified",
            "connection.username": "audit_owner",
            "connection.password": "audit_owner",
            "insert.mode": "insert",
            "primary.key.mode": "none",
            "schema.evolution": "none",
            "collection.name.format": f"{schema}.audit_entries",
            "batch.size": str(batch),
            "use.time.zone": "UTC",
            "consumer.override.max.poll.records": str(batch),
        }
        worker = {
            "bootstrap.servers": BOOTSTRAP,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true",
            "offset.storage.file.filename": str(Path(tempfile.mkdtemp()) / "offsets"),
            "offset.flush.interval.ms": "1000",
            "plugin.path": str(PLUGINS),
            "listeners": "http://127.0.0.1:0",
            "connector.client.config.override.policy": "All",
        }
        first = last = None
        async with _connect(config, worker) as proc:
            for _ in range(6000):  # bounded: 10 minutes
                stored = await conn.fetchval(f"SELECT count(*) FROM {schema}.audit_entries")
                now = time.perf_counter()
                if stored and first is None:
                    first = now
                if stored >= events:
                    last = now
                    break
                if proc.returncode is not None:
                    raise RuntimeError(f"Kafka Connect exited ({proc.returncode}) with {stored} of {events} rows")
                await asyncio.sleep(0.1)
        if first is None or last is None:
            raise RuntimeError(f"the peer stored too few rows of {events}")
        return Peer(batch, tasks, last - first, {**config, "connection.password": "…", **worker})
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def _run_projector(topic: str, events: int) -> tuple[float, str]:
    name = f"bench_{uuid4().hex[:8]}"
    settings = Settings(
        environment="development",
        bootstrap_servers=BOOTSTRAP,
        database_url=PROJECTOR,
        db_schema=name,
        group_id=f"{name}-group",
        audit_topic=topic,
        execution_log_topic=f"{name}.logs",
        dead_letter_topic=f"{name}.dlq",
        checkpoint_topic=f"{name}.checkpoints",
        checkpoint_key=SecretStr(NoteSigner.generate("audit-trail")[1]),
    )
    await migrate(OWNER, name)
    topics = [settings.execution_log_topic, settings.dead_letter_topic, settings.checkpoint_topic]
    await ensure_topics(BOOTSTRAP, topics, settings.partitions)
    elapsed = (await catch_up(settings, ProjectorState(), timeout_s=600)).seconds
    return elapsed, name


async def one_run(events: int, configs: list[tuple[int, int]]) -> tuple[float, list[Peer]]:
    name = f"bench_{uuid4().hex[:8]}"
    projector_topic, peer_topic = f"{name}.audit", f"{name}.peer"
    await ensure_topics(BOOTSTRAP, [projector_topic, peer_topic], 6)
    await _publish(events, projector_topic, peer_topic)
    projector_s, model = await _run_projector(projector_topic, events)
    try:
        peers = [await _run_peer(model, peer_topic, events, batch, tasks) for batch, tasks in configs]
    finally:
        conn = await asyncpg.connect(OWNER)
        try:
            await conn.execute(f"DROP SCHEMA {model} CASCADE")
        finally:
            await conn.close()
    return projector_s, peers


async def main(events: int, runs: int, smoke: bool, out: Path) -> None:
    logs.configure("WARNING")
    if not (PLUGINS / "debezium-connector-jdbc").is_dir():
        raise SystemExit("the Debezium JDBC sink is not installed: run deploy/local/tools.sh debezium")
    configs = [(2000, 1)] if smoke else [(500, 1), (2000, 1), (500, 2), (2000, 2)]
    print(f"{os.cpu_count()} cores; {events:,} start events per run, {runs} run(s); peer configurations {configs}")
    results = [await one_run(events, configs) for _ in range(runs)]
    projector = [events / s for s, _ in results]
    best = [max(events / p.seconds for p in peers) for _, peers in results]
    by_config = {
        f"batch {b}, {t} task(s)": statistics.median(events / p.seconds for _, peers in results for p in peers
                                                     if (p.batch, p.tasks) == (b, t))
        for b, t in configs
    }  # fmt: skip
    ratio = [p / b for p, b in zip(projector, best, strict=True)]
    for label, rate in by_config.items():
        print(f"peer (Connect + Debezium JDBC sink), {label:<22} {rate:>10,.0f} rows/s")
    print(f"peer, best configuration per run (median)        {statistics.median(best):>10,.0f} rows/s")
    print(f"projector (tree and checkpoints on, every guarantee) {statistics.median(projector):>7,.0f} events/s")
    print(f"projector ÷ peer: {statistics.median(ratio):.2f} (spread {max(ratio) - min(ratio):.2f} over {runs} run(s))")
    figures_out.write(
        out,
        {
            "smoke": smoke,
            "events": events,
            "projector_per_s": projector,
            "peer_best_per_s": best,
            "peer_by_configuration": by_config,
            "projector_over_peer": ratio,
            "peer_configurations": [p.config for p in results[0][1]],
        },
    )
    print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="A few thousand events, one configuration: a minute.")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("peer"))
    args = parser.parse_args()
    events, runs = (3000, 1) if args.smoke else (args.events, args.runs)
    asyncio.run(main(events, runs, args.smoke, args.json))
