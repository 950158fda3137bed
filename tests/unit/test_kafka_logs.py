"""The Kafka client's outage noise: one line when trouble starts, reminders, one when it ends, a count of the rest."""

import logging

import pytest

from audit_schemas import kafka_logs
from audit_schemas.kafka_logs import KafkaOutageFilter


def _record(level: int = logging.ERROR, msg: str = "Unable connect to node with id 0") -> logging.LogRecord:
    return logging.LogRecord("aiokafka.conn", level, __file__, 1, msg, (), None)


def test_an_outage_is_one_line_and_a_count(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    monkeypatch.setattr("audit_schemas.kafka_logs.time.monotonic", lambda: clock[0])
    held: list[int] = []
    f = KafkaOutageFilter(held.append)
    passed = []
    for _ in range(200):  # a second of reconnection attempts
        record = _record()
        if f.filter(record):
            passed.append(record.getMessage())
        clock[0] += 0.005
    assert len(passed) == 2  # the first as it is, the second saying that the rest are counted
    assert passed[0] == "Unable connect to node with id 0"
    assert passed[1].startswith("kafka client trouble (further client lines are counted")
    assert sum(held) == 198
    assert f.filter(_record(logging.DEBUG))  # debug lines are not the flood's
    reminders = []
    for _ in range(int(kafka_logs.REMIND_S)):  # the outage goes on: an attempt a second for a minute
        clock[0] += 1.0
        record = _record()
        if f.filter(record):
            reminders.append(record.getMessage())
    assert len(reminders) == 1
    assert "client lines held back" in reminders[0]
    with caplog.at_level(logging.WARNING, logger="aiokafka.outage"):
        f.recovered()
    assert not f.in_outage
    assert "trouble over" in caplog.text
    assert "the client succeeded again" in caplog.text
    assert f.filter(_record())  # the next outage is announced again


def test_a_quiet_spell_ends_the_outage(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = [50.0]
    monkeypatch.setattr("audit_schemas.kafka_logs.time.monotonic", lambda: clock[0])
    f = KafkaOutageFilter()
    assert f.filter(_record())
    assert f.filter(_record())  # "further lines are counted"
    assert not f.filter(_record())
    clock[0] += kafka_logs.QUIET_S + 1
    with caplog.at_level(logging.WARNING, logger="aiokafka.outage"):
        announced = f.filter(_record(msg="Unable to update metadata"))
    assert announced
    assert "no client error for a while" in caplog.text
    assert "1 client lines were held back" in caplog.text


def test_installed_on_every_aiokafka_logger() -> None:
    import aiokafka.conn  # noqa: F401

    installed = kafka_logs.quiet_kafka_outages()
    assert installed is kafka_logs.quiet_kafka_outages()  # idempotent
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.cluster"):
        assert installed in logging.getLogger(name).filters


def test_a_single_transient_warning_passes_alone(caplog: pytest.LogCaptureFixture) -> None:
    f = KafkaOutageFilter()
    record = _record(logging.WARNING, "Got error produce response ... NotLeaderForPartitionError, retrying")
    assert f.filter(record)
    assert record.getMessage().startswith("Got error produce response")
    with caplog.at_level(logging.WARNING, logger="aiokafka.outage"):
        f.recovered()
    assert caplog.text == ""  # nothing was held back: no summary
