"""Secrets never leave the process in clear: values under sensitive keys and credentials inside text are replaced
by a marker before an event is encoded — optionally an HMAC-SHA256 of the value, so an investigator holding the key
can still match a known value (as secret stores' audit devices do).
"""

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any, Final

MARKER: Final = "[REDACTED]"
DEFAULT_KEYS: Final = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "cookie",
    "credential",
)

_BEARER: Final = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=-]{6,})")
_URL_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@")


class Redactor:
    """Decides what is sensitive and how it is masked; one per producer."""

    def __init__(self, keys: Iterable[str] = DEFAULT_KEYS, hmac_key: bytes | None = None) -> None:
        self._keys = tuple(_normal(k) for k in keys if k)
        self._hmac_key = hmac_key
        names = "|".join(re.escape(k) for k in self._keys) or "(?!)"
        self._pairs = re.compile(rf"(?i)\b([\w.-]*(?:{names})[\w.-]*)([\"']?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;]+)")

    def sensitive(self, key: object) -> bool:
        """True for a key that names a secret (case-insensitive, `-` and `_` alike, contained anywhere)."""
        name = _normal(str(key))
        return any(k in name for k in self._keys)

    def marker(self, value: object) -> str:
        """The stand-in for a secret value: a fixed marker, or an HMAC of the value when a key is configured."""
        if self._hmac_key is None:
            return MARKER
        digest = hmac.new(self._hmac_key, str(value).encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()
        return f"[REDACTED hmac-sha256:{digest}]"

    def tree(self, value: Any) -> Any:
        """A copy of `value` with every value under a sensitive key masked, and credentials in strings masked."""
        if isinstance(value, dict):
            return {k: (self.marker(v) if self.sensitive(k) else self.tree(v)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def text(self, value: str) -> str:
        """Mask bearer and basic credentials, passwords in URLs, and `secret=value` pairs inside free text."""
        masked = _BEARER.sub(lambda m: f"{m.group(1)} {self.marker(m.group(2))}", value)
        masked = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MARKER}@", masked)
        return self._pairs.sub(lambda m: f"{m.group(1)}{m.group(2)}{self.marker(m.group(3))}", masked)


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")
