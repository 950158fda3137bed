"""What PostgreSQL cannot store is refused by the contract: by the producer's models and by decode()."""

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from audit_schemas import ActionStarted, Actor, Entity, EnvelopeError, ExecutionLog, decode, encode
from audit_schemas.storable import check_json, check_text, explain
from tests.factories import action_event, log_event, outcome_event, poison_records


@pytest.mark.parametrize("name", sorted(poison_records()))
def test_each_poison_value_is_refused_by_decode(name: str) -> None:
    _, value = poison_records()[name]
    with pytest.raises(EnvelopeError) as caught:
        decode(value)
    assert caught.value.reason == "schema_validation"


def test_valid_neighbours_of_the_poison_decode() -> None:
    start = action_event("fine")
    for event in (start, outcome_event(start, revision=2**63 - 1), log_event(start, ratio=1e308, big=10**100)):
        assert decode(encode(event)) == event


@pytest.mark.parametrize("bad", ["a\x00", "\udc80x"])
def test_producer_side_models_refuse_bad_text(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Entity(id=bad, model="resource")
    assert re.fullmatch(r"id: must (not contain a NUL character|be valid Unicode text).*", explain(caught.value))


def test_producer_side_models_refuse_bad_json_and_times() -> None:
    start = action_event("x")
    with pytest.raises(ValidationError, match="finite"):
        ExecutionLog.model_validate({**log_event(start).data.model_dump(), "fields": {"r": float("nan")}})
    for hours, when in ((-5, datetime(9999, 12, 31, 23, 0)), (5, datetime(1, 1, 1, 1, 0))):
        with pytest.raises(ValidationError) as caught:
            ActionStarted.model_validate(
                {**start.data.model_dump(), "started_at": when.replace(tzinfo=timezone(timedelta(hours=hours)))}
            )
        assert explain(caught.value) == "started_at: is out of range once converted to UTC (years 1 to 9999)"
    edge = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=5)))
    assert ActionStarted.model_validate({**start.data.model_dump(), "started_at": edge}).started_at == edge
    assert Actor.user("u", "Ada").display_name == "Ada"


def test_json_walk_names_the_path_and_limits_depth_and_size() -> None:
    with pytest.raises(ValueError, match="/a/0"):
        check_json({"a": [float("inf")]})
    nested: object = 1
    for _ in range(70):
        nested = [nested]
    with pytest.raises(ValueError, match="deeper"):
        check_json(nested)
    with pytest.raises(ValueError, match="too large"):
        check_json(1 << 13_001)
    assert check_json({"ok": [1, 2.5, "x", None, True]}) == {"ok": [1, 2.5, "x", None, True]}
    assert check_text("plain") == "plain"


def test_action_envelope_id_must_equal_the_audit_id() -> None:
    raw = json.loads(encode(action_event("x")))
    raw["id"] = "0190a0e0-0000-7000-8000-000000000000"
    with pytest.raises(EnvelopeError, match="audit_id"):
        decode(json.dumps(raw).encode())


@pytest.mark.parametrize("attribute", ["specversion", "type", "datacontenttype"])
def test_wire_attributes_are_required(attribute: str) -> None:
    raw = json.loads(encode(action_event("x")))
    del raw[attribute]
    with pytest.raises(EnvelopeError):
        decode(json.dumps(raw).encode())
