"""W3C Trace Context `traceparent` strings: how a trace crosses a process or thread boundary."""

import re
import secrets
from dataclasses import dataclass
from typing import Final
from uuid import UUID

_TRACEPARENT: Final = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class TraceparentError(ValueError):
    """A string that is not a version-00 W3C traceparent."""


@dataclass(frozen=True, slots=True)
class Traceparent:
    """A parsed traceparent: the audit id is the trace id."""

    trace_id: str
    """32 lowercase hex digits; equal to the audit id's hex."""
    span_id: str
    """16 lowercase hex digits naming the span that handed the trace on."""
    sampled: bool = True

    @property
    def audit_id(self) -> UUID:
        """The audit entry this trace belongs to."""
        return UUID(hex=self.trace_id)

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    @classmethod
    def for_audit(cls, audit_id: UUID, span_id: str | None = None) -> "Traceparent":
        """A traceparent for an action, with a fresh span id unless one is given."""
        return cls(trace_id=audit_id.hex, span_id=span_id or new_span_id())

    @classmethod
    def parse(cls, value: str) -> "Traceparent":
        """Parse `00-<trace-id>-<span-id>-<flags>`; all-zero ids are invalid per the spec."""
        match = _TRACEPARENT.match(value.strip())
        if match is None:
            raise TraceparentError(f"not a W3C traceparent: {value!r}")
        trace_id, span_id, flags = match.groups()
        if trace_id == "0" * 32 or span_id == "0" * 16:
            raise TraceparentError(f"traceparent has an all-zero id: {value!r}")
        return cls(trace_id=trace_id, span_id=span_id, sampled=bool(int(flags, 16) & 1))


def new_span_id() -> str:
    """A random non-zero 64-bit span id as 16 hex digits."""
    while True:
        span = secrets.token_hex(8)
        if span != "0" * 16:
            return span


TRACESTATE_KEY: Final = "audittrail"
"""Our W3C `tracestate` list member: `audittrail=t:<tenant>` carries the action's tenant beside its traceparent."""
_MEMBER: Final = re.compile(
    r"^\s*([a-z0-9][_0-9a-z\-*/@]{0,255})=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])\s*$"
)


def tracestate_for(tenant_id: str, existing: str | None = None) -> str:
    """A `tracestate` with our member first (W3C: the updating vendor moves its member to the front)."""
    others = [m for m in (existing or "").split(",") if m.strip() and not m.strip().startswith(f"{TRACESTATE_KEY}=")]
    return ",".join([f"{TRACESTATE_KEY}=t:{tenant_id}", *[m.strip() for m in others][:31]])


def tenant_from_tracestate(value: str | None) -> str | None:
    """The tenant carried in a `tracestate`, or None when our member is absent or malformed."""
    for member in (value or "").split(",")[:32]:
        match = _MEMBER.match(member)
        if match and match.group(1) == TRACESTATE_KEY and match.group(2).startswith("t:"):
            tenant = match.group(2)[2:]
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", tenant):
                return tenant
    return None
