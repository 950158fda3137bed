"""One bad record never stops the log: contract poison, database-refused values, and faults that are not poison."""

from typing import Any

import httpx
import pytest

from audit_projector.errors import RecordDataError, RecordsRejectedError
from audit_projector.repository import Batch, OffsetFence, ProjectionRepository
from audit_projector.rows import BatchRows, Coordinates, Row, entry_row
from audit_schemas import encode
from tests.conftest import Isolated, free_port, projector_running
from tests.factories import action_event, key_of, log_event, poison_records, read_topic, send_keyed
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_each_poison_value_is_dead_lettered_and_the_stream_continues(isolated: Isolated) -> None:
    """NUL, NaN, Infinity, bigint overflow, lone surrogates, UTC overflow: each dead-lettered, neighbours projected."""
    poison = poison_records()
    audit_topic, log_topic = isolated.projector.audit_topic, isolated.projector.execution_log_topic
    good = [action_event(f"good-{i}") for i in range(len(poison) + 1)]
    audit_records: list[tuple[bytes, bytes | None]] = [(encode(good[0]), key_of(good[0]))]
    log_records: list[tuple[bytes, bytes | None]] = []
    for i, (kind, value) in enumerate(poison.values(), start=1):
        target = audit_records if kind == "audit" else log_records
        target.append((value, b"acme/resource/poison-host"))
        audit_records.append((encode(good[i]), key_of(good[i])))
        log_records.append((encode(log_event(good[i], f"line {i}")), key_of(good[i])))
    audit_at = await send_keyed(isolated.stack.bootstrap, audit_topic, audit_records)
    log_at = await send_keyed(isolated.stack.bootstrap, log_topic, log_records)

    port = free_port()
    async with projector_running(isolated.projector.model_copy(update={"health_port": port})):

        async def all_good_projected() -> bool:
            entries = await isolated.count("audit_entries")
            logs = await isolated.count("execution_logs")
            return entries == len(good) and logs == len(good) - 1

        await eventually(all_good_projected, within=60)
        async with httpx.AsyncClient() as client:

            async def ready() -> bool:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200

            await eventually(ready, within=15)

    async with isolated.owner() as conn:
        letters = await conn.fetch(
            "SELECT kafka_topic, kafka_partition, kafka_offset, reason, detail FROM dead_letters"
        )
    poison_at = {
        (audit_topic, *audit_at[i]) for i, (value, _) in enumerate(audit_records) if value in _values(poison, "audit")
    } | {(log_topic, *log_at[i]) for i, (value, _) in enumerate(log_records) if value in _values(poison, "log")}
    assert {(r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) for r in letters} == poison_at
    assert {r["reason"] for r in letters} == {"schema_validation"}
    details = " ".join(r["detail"] for r in letters)
    for word in ("NUL", "finite", "9223372036854775807", "surrogate", "UTC"):
        assert word in details, f"no dead letter says {word!r}"
    published = await read_topic(isolated.stack.bootstrap, isolated.projector.dead_letter_topic)
    assert len(published) == len(poison), "each poison record is published to the dead-letter topic once"


def _values(poison: dict[str, tuple[str, bytes]], kind: str) -> set[bytes]:
    return {value for k, value in poison.values() if k == kind}


async def _repository(isolated: Isolated) -> ProjectionRepository:
    s = isolated.projector
    return await ProjectionRepository.connect(str(s.database_url), s.db_schema, s.group_id, "test", s.control_schema)


def _forged_rows(topic: str, bad_at: set[int], count: int) -> BatchRows:
    """Entries built past the contract: those at `bad_at` carry a NUL PostgreSQL refuses."""
    rows = BatchRows()
    for offset in range(count):
        at = Coordinates(topic, 0, offset)
        row = entry_row(action_event(f"e-{offset}"), at)
        if offset in bad_at:
            values = list(row.values)
            values[5] = "forged\x00id"
            row = Row(at, tuple(values), row.claim)
        rows.entries.append(row)
    return rows


async def test_the_database_refusing_a_value_isolates_that_record(isolated: Isolated) -> None:
    """Second line of defence: a data error is narrowed down to the records that fail on their own."""
    topic = isolated.projector.audit_topic
    repo = await _repository(isolated)
    try:
        rows = _forged_rows(topic, {3, 11}, 16)
        with pytest.raises(RecordDataError, match="22021"):
            await repo.write_batch(Batch(rows, [OffsetFence(topic, 0, None, 16)]))
        with pytest.raises(RecordsRejectedError) as caught:
            await repo.write_batch(Batch(rows, [OffsetFence(topic, 0, None, 16)]), isolate=True)
        assert sorted(r.offset for r in caught.value.rejections) == [3, 11]
        assert {r.reason for r in caught.value.rejections} == {"database_refused"}
        assert await isolated.count("audit_entries") == 0, "a refused batch writes nothing"
        rows.without({Coordinates(topic, 0, 3), Coordinates(topic, 0, 11)})
        await repo.write_batch(Batch(rows, [OffsetFence(topic, 0, None, 16)]), isolate=True)
    finally:
        await repo.close()
    assert await isolated.count("audit_entries") == 14


async def test_a_record_the_database_refuses_is_dead_lettered_end_to_end(isolated: Isolated) -> None:
    """A value the contract allows but this database refuses (a data exception) is dead-lettered with the error."""
    async with isolated.owner() as conn:
        await conn.execute(
            """CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 IF NEW.entity_id = 'refuse-me' THEN
                   RAISE EXCEPTION 'value refused by policy' USING ERRCODE = '22023';
                 END IF;
                 RETURN NEW;
               END $$"""
        )
        await conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries FOR EACH ROW EXECUTE FUNCTION refuse_marked()"
        )
    events = [action_event(f"ok-{i}") for i in range(5)]
    events.insert(2, action_event("refuse-me"))
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(e), key_of(e)) for e in events])
    async with projector_running(isolated.projector):
        await eventually(lambda: _has(isolated, "dead_letters", 1))
        await eventually(lambda: _has(isolated, "audit_entries", 5))
    async with isolated.owner() as conn:
        letter = await conn.fetchrow("SELECT reason, detail FROM dead_letters")
    assert letter is not None
    assert letter["reason"] == "database_refused"
    assert "22023" in letter["detail"]
    assert "refused by policy" in letter["detail"]


async def _has(isolated: Isolated, table: str, count: int) -> bool:
    return await isolated.count(table) == count


async def test_a_database_fault_stops_partitions_without_dead_lettering(isolated: Isolated) -> None:
    """A missing privilege is not the records' fault: log partitions stop, audit events keep flowing, nothing is
    dead-lettered, and the partitions resume by themselves once the fault is fixed."""
    async with isolated.owner() as conn:
        await conn.execute("REVOKE INSERT ON execution_logs FROM audit_writer")
    starts = [action_event(f"a-{i}") for i in range(6)]
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(e), key_of(e)) for e in starts])
    await send_keyed(
        isolated.stack.bootstrap,
        isolated.projector.execution_log_topic,
        [(encode(log_event(e)), key_of(log_event(e))) for e in starts],
    )
    port = free_port()
    settings = isolated.projector.model_copy(update={"health_port": port, "probe_interval_s": 0.5})
    async with projector_running(settings), httpx.AsyncClient() as client:
        await eventually(lambda: _has(isolated, "audit_entries", 6))

        async def logs_blocked() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"http://127.0.0.1:{port}/readyz")).json()
            reasons = {b["reason"] for b in body["blocked"].values()}
            return body if reasons == {"database_error"} else None

        body = await eventually(logs_blocked)
        assert all(k.startswith(settings.execution_log_topic) for k in body["blocked"])
        assert "permission denied" in next(iter(body["blocked"].values()))["detail"]
        assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 503
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        async with isolated.owner() as conn:
            assert await conn.fetchval("SELECT count(*) FROM projector_blocks WHERE reason = 'database_error'") >= 1
            await conn.execute("GRANT INSERT ON execution_logs TO audit_writer")
        await eventually(lambda: _has(isolated, "execution_logs", 6), within=60)

        async def ready() -> bool:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200

        await eventually(ready, within=30)
    assert await isolated.count("dead_letters") == 0
    assert await isolated.count("projector_blocks") == 0, "blocks are cleared once the partitions move on"
