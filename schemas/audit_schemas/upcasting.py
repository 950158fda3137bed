"""Upcasters: functions that lift an older payload (`data` as parsed JSON) one `schema_version` up, registered per
event type. Decoding applies them in turn until the payload is at the version the models describe, so the
projector and a replay read every version the log holds; the raw record is never rewritten (its Merkle leaf is
computed over the bytes as written)."""

from collections.abc import Callable
from typing import Any, Final

from audit_schemas.events import ACTION_SCHEMA_VERSION, OUTCOME_SCHEMA_VERSION, SCHEMA_VERSION
from audit_schemas.topics import ACTION_EVENT_TYPE, EXECUTION_LOG_EVENT_TYPE, OUTCOME_EVENT_TYPE

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

CURRENT: Final = {
    ACTION_EVENT_TYPE: ACTION_SCHEMA_VERSION,
    OUTCOME_EVENT_TYPE: OUTCOME_SCHEMA_VERSION,
    EXECUTION_LOG_EVENT_TYPE: SCHEMA_VERSION,
}
"""The payload version the models describe, per event type."""

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UpcastError(ValueError):
    """An older payload no registered upcaster can lift (a gap in the chain, or a shape the old version never
    allowed)."""


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function lifting `event_type` payloads from `from_version` to the next version."""

    def register(function: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
        _UPCASTERS[key] = function
        return function

    return register


def upcast(event_type: str, data: Payload) -> Payload:
    """`data` lifted to the current version of its type (unchanged when it is current, newer or unversioned)."""
    target = CURRENT.get(event_type)
    version = data.get("schema_version")
    if target is None or not isinstance(version, int) or isinstance(version, bool):
        return data
    while version < target:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            if (event_type, version) in _NATIVE:
                return data  # the model still reads this version as it is
            raise UpcastError(f"no upcaster from {event_type} schema_version {version}")
        data = step(dict(data))
        if data.get("schema_version") != version + 1:
            raise UpcastError(f"the {event_type} v{version} upcaster did not produce version {version + 1}")
        version += 1
    return data


_NATIVE: Final = frozenset({(OUTCOME_EVENT_TYPE, 1), (ACTION_EVENT_TYPE, 2)})
"""Older versions the current model validates directly (each lacks only what the next version added)."""


@upcaster(ACTION_EVENT_TYPE, 1)
def _action_v1(data: Payload) -> Payload:
    """v1 carried the caller's OpenTelemetry ids at the top; v2 groups them under `otel`."""
    trace, span = data.pop("otel_trace_id", None), data.pop("otel_span_id", None)
    data["otel"] = None if trace is None and span is None else {"trace_id": trace, "span_id": span}
    data["schema_version"] = 2
    return data


__all__ = ["CURRENT", "Payload", "UpcastError", "Upcaster", "upcast", "upcaster"]
