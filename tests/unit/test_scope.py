"""What an action body records for its outcome event."""

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID, uuid4

import pytest

from audit_producer import Action, ActionScope, Entity


def test_change_set_from_two_snapshots_keeps_only_differences() -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    scope.set_changes({"size": 1, "name": "a", "gone": True}, {"size": 3, "name": "a", "new": [1]})
    assert {k: (v.before, v.after) for k, v in scope.changes.items()} == {
        "gone": (True, None),
        "new": (None, [1]),
        "size": (1, 3),
    }


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True, 2**63])
def test_a_bad_revision_is_reported_not_raised_into_the_body(bad: object) -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    scope.revision = bad  # type: ignore[assignment]
    assert scope.revision is None
    assert "2**63-1" in scope.unrecorded["revision"]
    scope.revision = 4
    assert scope.revision == 4
    assert "revision" not in scope.unrecorded


class Colour(Enum):
    RED = "red"


def test_common_types_are_encoded_deterministically() -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ident = UUID("0190a0e0-0000-7000-8000-000000000000")
    scope.change("at", None, when)
    scope.change("day", date(2026, 1, 2), None)
    scope.change("price", Decimal("10.10"), Decimal("0.1"))
    scope.change("id", ident, None)
    scope.change("colour", Colour.RED, None)
    scope.change("blob", b"\x00\xff", None)
    scope.change("tags", {"b", "a"}, ("x", 1))
    scope.change(7, "int key", None)
    got = {k: (v.before, v.after) for k, v in scope.changes.items()}
    assert got == {
        "at": (None, "2026-01-02T03:04:05+00:00"),
        "day": ("2026-01-02", None),
        "price": ("10.10", "0.1"),
        "id": (str(ident), None),
        "colour": ("red", None),
        "blob": ("AP8=", None),
        "tags": (["a", "b"], ["x", 1]),
        "7": ("int key", None),
    }
    assert scope.unrecorded == {}


@pytest.mark.parametrize(
    ("name", "before", "match"),
    [
        ("ratio", float("nan"), "finite"),
        ("k", "a\x00b", "NUL"),
        ("k", "\ud800", "surrogate"),
        ("k", object(), "not JSON-encodable"),
        ("k", "x" * 70_000, "over the 65536-byte limit"),
        ("k", 1 << 13_001, "too large"),
    ],
)
def test_an_unrecordable_value_becomes_a_marker_saying_why(name: str, before: object, match: str) -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    scope.change(name, before, 1)
    assert scope.changes[name].after == 1
    marker = scope.changes[name].before
    assert isinstance(marker, dict)
    assert match in str(marker["$unrecorded"])
    assert match in scope.unrecorded[f"changes.{name}.before"]


def test_a_circular_value_and_a_bad_field_name_are_markers() -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    loop: list[Any] = []
    loop.append(loop)
    scope.change("loop", loop, None)
    scope.change("bad\x00name", 1, 2)
    assert scope.changes["loop"].before == [{"$unrecorded": "circular reference"}]
    assert "bad\\x00name" in scope.changes
    assert any("NUL" in why for why in scope.unrecorded.values())
