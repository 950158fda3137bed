"""Cursors cannot be forged, altered or reused for a different query."""

import base64

import pytest

from audit_query.cursor import Cursor, CursorCodec, scope_of
from audit_query.errors import BadRequestError

CODEC = CursorCodec(b"secret")
SCOPE = scope_of(view="audit", sort="time", order="desc", filters={"model": "resource"})


def test_round_trip() -> None:
    cursor = Cursor(SCOPE, ("2026-01-01T00:00:00+00:00", "0190a1b2-0000-7000-8000-000000000000"))
    assert CODEC.decode(CODEC.encode(cursor), SCOPE) == cursor


def test_other_query_is_refused() -> None:
    token = CODEC.encode(Cursor(SCOPE, ("x",)))
    other = scope_of(view="audit", sort="time", order="asc", filters={"model": "resource"})
    with pytest.raises(BadRequestError, match="different query"):
        CODEC.decode(token, other)


def test_other_secret_is_refused() -> None:
    token = CursorCodec(b"another").encode(Cursor(SCOPE, ("x",)))
    with pytest.raises(BadRequestError, match="not issued"):
        CODEC.decode(token, SCOPE)


@pytest.mark.parametrize("token", ["", "!!!", "abc", base64.urlsafe_b64encode(b"{}" * 20).decode()])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(BadRequestError):
        CODEC.decode(token, SCOPE)


def test_scope_ignores_key_order() -> None:
    assert scope_of(a=1, b={"x": 1, "y": 2}) == scope_of(b={"y": 2, "x": 1}, a=1)
