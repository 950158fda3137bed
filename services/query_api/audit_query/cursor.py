"""Opaque keyset cursors, signed and bound to the sort and filter that produced them."""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Final

from audit_query.errors import BadRequestError

_VERSION: Final = 1
_MAC_BYTES: Final = 16


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: the sort key of the last row returned."""

    scope: str
    """Hash of the view, sort, order and filters; a cursor only continues the query it came from."""
    key: tuple[Any, ...]
    backward: bool = False
    """True for a `prev_cursor`: the page before the row whose key this is."""


class CursorCodec:
    """Encodes and verifies cursors with an HMAC so they cannot be forged or moved between queries."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, cursor: Cursor) -> str:
        """base64url(JSON payload || MAC)."""
        fields: dict[str, Any] = {"v": _VERSION, "s": cursor.scope, "k": list(cursor.key)}
        if cursor.backward:
            fields["b"] = 1
        payload = json.dumps(fields, separators=(",", ":"))
        raw = payload.encode()
        return base64.urlsafe_b64encode(raw + self._mac(raw)).decode().rstrip("=")

    def decode(self, token: str, scope: str) -> Cursor:
        """Verify and parse; any problem is a BadRequestError that says which."""
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as e:
            raise BadRequestError("malformed cursor: not base64url") from e
        raw, mac = blob[:-_MAC_BYTES], blob[-_MAC_BYTES:]
        if len(blob) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(raw)):
            raise BadRequestError("invalid cursor: not issued by this service or altered")
        try:
            payload = json.loads(raw)
            version, cursor_scope, key, backward = payload["v"], payload["s"], payload["k"], payload.get("b") == 1
        except (ValueError, KeyError, TypeError) as e:
            raise BadRequestError("malformed cursor payload") from e
        if version != _VERSION or not isinstance(key, list):
            raise BadRequestError("unsupported cursor version")
        if cursor_scope != scope:
            raise BadRequestError("cursor belongs to a different query: keep the sort, order and filters it came with")
        return Cursor(scope=scope, key=tuple(key), backward=backward)

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._secret, raw, hashlib.sha256).digest()[:_MAC_BYTES]


def scope_of(**parts: Any) -> str:
    """A stable hash of a query's shape (view, sort, order, filters)."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]
