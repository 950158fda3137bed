"""Refuse request inputs no handler should see: NUL characters, invalid text, repeated parameters."""

from typing import Final
from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

MULTI_VALUED: Final = frozenset({"event", "audit_id", "group_by", "level"})
"""Query parameters that may be repeated; any other given twice is ambiguous and refused."""


class InputGuard:
    """ASGI middleware: a 400 JSON answer before routing for inputs PostgreSQL or the handlers cannot take."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _problem(scope)
            if problem is not None:
                await JSONResponse({"detail": problem}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _problem(scope: Scope) -> str | None:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    if (why := _text_problem(unquote_to_bytes(raw_path))) is not None:
        return f"the path {why}"
    query: bytes = scope.get("query_string", b"")
    seen: set[str] = set()
    for key_bytes, value_bytes in _pairs(query):
        for part, name in ((key_bytes, "a parameter name"), (value_bytes, "a parameter value")):
            if (why := _text_problem(part)) is not None:
                return f"{name} {why}"
        key = key_bytes.decode()
        if key in seen and key not in MULTI_VALUED:
            return f"parameter {key!r} is given more than once; give it once"
        seen.add(key)
    return None


def _pairs(query: bytes) -> list[tuple[bytes, bytes]]:
    """Percent-decoded (key, value) byte pairs, decoded here rather than by a parser that hides bad bytes."""
    pairs = []
    for part in query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        pairs.append((unquote_to_bytes(key.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" "))))
    return pairs


def _text_problem(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    if "\x00" in text:
        return "contains a NUL character"
    return None
