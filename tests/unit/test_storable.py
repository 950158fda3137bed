"""What PostgreSQL cannot store is refused by the contract: by the producer's models and by decode()."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from audit_schemas import ActionStarted, Actor, Entity, EnvelopeError, ExecutionLog, decode, encode
from audit_schemas.storable import check_json, check_text
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
    with pytest.raises(ValidationError, match=r"NUL|surrogate"):
        Entity(id=bad, model="resource")


def test_producer_side_models_refuse_bad_json_and_times() -> None:
    start = action_event("x")
    with pytest.raises(ValidationError, match="finite"):
        ExecutionLog.model_validate({**log_event(start).data.model_dump(), "fields": {"r": float("nan")}})
    with pytest.raises(ValidationError, match="UTC"):
        ActionStarted.model_validate(
            {
                **start.data.model_dump(),
                "started_at": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
            }
        )
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
