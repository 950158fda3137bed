"""What an action body records for its outcome event."""

from uuid import uuid4

import pytest

from audit_producer import Action, ActionScope, Entity, InvalidActionError


def test_change_set_from_two_snapshots_keeps_only_differences() -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    scope.set_changes({"size": 1, "name": "a", "gone": True}, {"size": 3, "name": "a", "new": [1]})
    assert {k: (v.before, v.after) for k, v in scope.changes.items()} == {
        "gone": (True, None),
        "new": (None, [1]),
        "size": (1, 3),
    }


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True, 2**63])
def test_bad_revision_fails_inside_the_body(bad: object) -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    with pytest.raises(InvalidActionError, match="revision"):
        scope.revision = bad  # type: ignore[assignment]
    scope.revision = 4
    assert scope.revision == 4


def test_non_json_change_fails_inside_the_body() -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    with pytest.raises(InvalidActionError, match="not JSON-compatible"):
        scope.change("handle", None, object())


@pytest.mark.parametrize(
    ("name", "before", "match"),
    [("ratio", float("nan"), "finite"), ("k", "a\x00b", "NUL"), ("k\x00", 1, "NUL"), ("k", "\ud800", "surrogate")],
)
def test_unstorable_change_fails_inside_the_body(name: str, before: object, match: str) -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    with pytest.raises(InvalidActionError, match=match):
        scope.change(name, before, 1)
