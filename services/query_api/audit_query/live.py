"""Server-sent events of one trace as it is projected: entry, log lines, outcome; resumable without loss.

Each event's id is a signed cursor of per-partition positions (topic, partition, last offset delivered), which
stay the same across a rebuild of the read model. A browser's EventSource sends it back as `Last-Event-ID` when it
reconnects, and the stream goes on after exactly those positions: nothing lost, nothing shown twice.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final
from uuid import UUID

from audit_query.auth import Principal
from audit_query.cursor import Cursor, CursorCodec, scope_of
from audit_query.errors import BadRequestError, QueryError, TooManyRequestsError
from audit_query.repository import AuditRepository

POLL_S: Final = 0.5
GRACE_S: Final = 3.0
"""After the outcome, how long the stream waits for late log lines before it says `end`."""
MAX_STREAM_S: Final = 600.0
"""A stream ends after this long; the browser reconnects with its last id and loses nothing."""
KEEPALIVE_S: Final = 15.0
BATCH: Final = 500

Positions = dict[tuple[str, int], int]


class StreamSlot:
    """One open stream's place in its credential's share; released once, when the stream ends."""

    def __init__(self, slots: "StreamSlots", key: str) -> None:
        self._slots = slots
        self._key = key
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release(self._key)

    async def holding(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """`stream`, releasing the slot when it ends, fails or the client goes away."""
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self.release()


class StreamSlots:
    """How many live streams each credential holds open in this worker, bounded (a polling stream costs a query
    every half second: one caller must not hold hundreds)."""

    def __init__(self, per_credential: int) -> None:
        self._limit = per_credential
        self._open: dict[str, int] = {}

    def acquire(self, principal: Principal) -> StreamSlot:
        """A slot for `principal`, or 429 when it holds its share."""
        key = f"{principal.kind}:{principal.token_id or principal.name}"
        held = self._open.get(key, 0)
        if held >= self._limit:
            raise TooManyRequestsError(
                f"this credential already holds {held} open live streams (the limit is {self._limit}); "
                "close one or retry later",
                retry_after_s=5,
            )
        self._open[key] = held + 1
        return StreamSlot(self, key)

    def release(self, key: str) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)


async def recorded(repo: AuditRepository, tenants: str, trace_id: str, grace_s: float) -> bool:
    """Whether anything (the entry or a log line) is recorded under the trace for these tenants, waiting up to
    `grace_s` for an action that is just starting."""
    audit_id = UUID(hex=trace_id)
    deadline = time.monotonic() + grace_s
    while True:
        records, _ = await repo.trace_since(tenants, audit_id, {}, 1)
        if records:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def stream_scope(trace_id: str, tenants: str) -> str:
    """Cursors of one trace's stream for one caller's tenants."""
    return scope_of(view="trace-stream", trace=trace_id, tenants=tenants)


def positions_of(codec: CursorCodec, token: str | None, scope: str) -> Positions:
    """The positions a `Last-Event-ID` names (none: from the start); 400 when it is not one of ours."""
    if not token:
        return {}
    key = codec.decode(token, scope).key
    positions: Positions = {}
    for item in key:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not all(isinstance(v, int) and 0 <= v < 2**63 for v in item[1:])
        ):
            raise BadRequestError("malformed Last-Event-ID: its positions have the wrong shape")
        positions[(item[0], item[1])] = item[2]
    return positions


async def events(
    repo: AuditRepository,
    codec: CursorCodec,
    *,
    tenants: str,
    trace_id: str,
    scope: str,
    positions: Positions,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The event stream: `entry`, `log` and `outcome` events as they are projected, then `end`."""
    audit_id = UUID(hex=trace_id)
    started = last_sent = time.monotonic()
    ended_at: float | None = None
    yield "retry: 2000\n\n"
    while time.monotonic() - started < MAX_STREAM_S and not await disconnected():
        try:
            records, ended = await repo.trace_since(tenants, audit_id, positions, BATCH)
        except QueryError as e:
            yield _event("error", {"detail": str(e)})
            return
        for record in records:
            at = (record.topic, record.partition)
            positions[at] = max(positions.get(at, -1), record.offset)
            cursor = codec.encode(Cursor(scope, tuple([t, p, o] for (t, p), o in sorted(positions.items()))))
            yield _event(record.kind, record.item.model_dump(mode="json"), cursor)
            last_sent = time.monotonic()
        if len(records) >= BATCH:
            continue  # more are waiting
        now = time.monotonic()
        if ended:
            ended_at = ended_at if ended_at is not None and not records else now
            if now - ended_at >= GRACE_S:
                yield _event("end", {"trace_id": trace_id})
                return
        if now - last_sent >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = now
        await asyncio.sleep(POLL_S)


def _event(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id else []
    lines += [f"event: {kind}", "data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False)]
    return "\n".join(lines) + "\n\n"


__all__ = ["StreamSlot", "StreamSlots", "events", "positions_of", "recorded", "stream_scope"]
