"""What an action body records for its outcome event."""

from uuid import uuid4

from audit_producer import Action, ActionScope, Entity


def test_change_set_from_two_snapshots_keeps_only_differences() -> None:
    scope = ActionScope(uuid4(), Action.UPDATE, Entity(id="r", model="resource"), "acme", "00-x")
    scope.set_changes({"size": 1, "name": "a", "gone": True}, {"size": 3, "name": "a", "new": [1]})
    assert {k: (v.before, v.after) for k, v in scope.changes.items()} == {
        "gone": (True, None),
        "new": (None, [1]),
        "size": (1, 3),
    }
