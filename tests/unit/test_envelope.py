"""Envelope decoding: what is poison, what is merely newer, and the committed JSON Schema."""

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from audit_schemas import (
    ActionEvent,
    ActionStarted,
    Actor,
    Entity,
    EnvelopeError,
    NewerSchemaError,
    OtelSpan,
    decode,
    encode,
    kafka_headers,
)
from audit_schemas.jsonschema import drifted
from audit_schemas.topics import ACTION_EVENT_TYPE
from audit_schemas.upcasting import upcaster


def _event() -> ActionEvent:
    audit_id = uuid4()
    now = datetime.now(UTC)
    data = ActionStarted(
        audit_id=audit_id,
        tenant_id="acme",
        action="create",
        entity=Entity(id="r-1", model="resource"),
        actor=Actor.user("u-1", "Ada"),
        started_at=now,
    )
    return ActionEvent(id=audit_id, source="svc", subject="resource/r-1", time=now, data=data)


def test_round_trip_keeps_every_field() -> None:
    event = _event()
    assert decode(encode(event)) == event


def test_structured_mode_envelope_has_cloudevents_attributes() -> None:
    raw = json.loads(encode(_event()))
    assert raw["specversion"] == "1.0"
    assert raw["type"] == "dev.audittrail.audit.action.v1"
    assert raw["datacontenttype"] == "application/json"
    assert raw["data"]["action"] == "create"
    assert raw["data"]["schema_version"] == 3


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"specversion": "1.0"}', "invalid_envelope"),
        (b'{"type": "com.example.other.v1", "data": {}}', "unknown_type"),
        (None, "empty_value"),
    ],
)
def test_poison_is_named(value: bytes | None, reason: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(value)
    assert caught.value.reason == reason


def test_unknown_action_is_its_own_reason() -> None:
    raw = json.loads(encode(_event()))
    raw["data"]["action"] = "teleport"
    with pytest.raises(EnvelopeError) as caught:
        decode(json.dumps(raw).encode())
    assert caught.value.reason == "unknown_action"


def test_missing_field_is_schema_validation() -> None:
    raw = json.loads(encode(_event()))
    del raw["data"]["entity"]
    with pytest.raises(EnvelopeError) as caught:
        decode(json.dumps(raw).encode())
    assert caught.value.reason == "schema_validation"
    assert "entity" in caught.value.detail


@pytest.mark.parametrize("change", [{"data": {"schema_version": 4}}, {"type": "dev.audittrail.audit.action.v2"}])
def test_newer_schema_is_not_poison(change: dict[str, object]) -> None:
    raw = json.loads(encode(_event()))
    for key, value in change.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    with pytest.raises(NewerSchemaError):
        decode(json.dumps(raw).encode())


def test_committed_json_schema_matches_the_models() -> None:
    assert drifted() == [], "run `make schemas` and commit schemas/json"


def test_kafka_headers_carry_content_type_kind_and_trace() -> None:
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    headers = dict(kafka_headers(_event().model_copy(update={"traceparent": traceparent})))
    assert headers["content-type"] == b"application/cloudevents+json; charset=UTF-8"
    assert headers["ce_type"] == b"dev.audittrail.audit.action.v1"
    assert headers["traceparent"] == traceparent.encode()


def test_a_version_1_action_is_upcast_and_reads_like_version_2() -> None:
    event = _event()
    current = event.model_copy(
        update={"data": event.data.model_copy(update={"otel": OtelSpan(trace_id="a" * 32, span_id="b" * 16)})}
    )
    raw = json.loads(encode(current))
    old = dict(raw["data"], schema_version=1, otel_trace_id="a" * 32, otel_span_id="b" * 16)
    del old["otel"], old["sealed"]
    decoded = decode(json.dumps({**raw, "data": old}).encode())
    assert isinstance(decoded, ActionEvent)
    # The same payload, at version 2 (which the model reads as it is: 3 only added `sealed`).
    assert decoded.data == current.data.model_copy(update={"schema_version": 2})
    assert (decoded.data.otel_trace_id, decoded.data.otel_span_id) == ("a" * 32, "b" * 16)
    without = dict(old)
    del without["otel_trace_id"], without["otel_span_id"]
    assert decode(json.dumps({**raw, "data": without}).encode()).data.otel is None  # type: ignore[union-attr]


def test_a_gap_in_the_upcaster_chain_is_named() -> None:
    raw = json.loads(encode(_event()))
    raw["data"]["schema_version"] = 0
    with pytest.raises(EnvelopeError) as caught:
        decode(json.dumps(raw).encode())
    assert caught.value.reason == "no_upcaster"
    assert "schema_version 0" in caught.value.detail


def test_upcasters_register_once_per_version() -> None:
    with pytest.raises(ValueError, match="already registered"):
        upcaster(ACTION_EVENT_TYPE, 1)(lambda data: data)
