"""Rows read in log order through server-side cursors, so a check walks tables side by side (a merge) instead of
looking each record up: one sort per table instead of one scan per record."""

from collections import deque
from typing import Any, Final

import asyncpg

_FETCH: Final = 2000

Position = tuple[str, int, int]
"""A record's place in Kafka: topic, partition, offset (ordered as the cursors order them: code points)."""


class OrderedRows:
    """A cursor over rows ordered by their position (the query's first three columns), read ahead in chunks.

    Must be opened inside a transaction, whose snapshot every stream of one check shares.
    """

    def __init__(self, cursor: "asyncpg.cursor.Cursor[asyncpg.Record]") -> None:
        self._cursor = cursor
        self._buffer: deque[asyncpg.Record] = deque()
        self._exhausted = False

    @classmethod
    async def open(cls, conn: asyncpg.Connection, sql: str, *args: Any) -> "OrderedRows":
        """Open `sql` (which selects topic, partition, offset first and orders by them) as a cursor."""
        return cls(await conn.cursor(sql, *args))

    async def peek(self) -> asyncpg.Record | None:
        """The next row without taking it (None at the end)."""
        if not self._buffer and not self._exhausted:
            rows = await self._cursor.fetch(_FETCH)
            self._buffer.extend(rows)
            self._exhausted = len(rows) < _FETCH
        return self._buffer[0] if self._buffer else None

    async def next(self) -> asyncpg.Record | None:
        """Take the next row (None at the end)."""
        row = await self.peek()
        if row is not None:
            self._buffer.popleft()
        return row

    async def before(self, position: Position) -> list[asyncpg.Record]:
        """Take every row whose position comes before `position` (rows no walked record accounts for)."""
        out = []
        while (row := await self.peek()) is not None and (row[0], row[1], row[2]) < position:
            out.append(self._buffer.popleft())
        return out

    async def at(self, position: Position) -> asyncpg.Record | None:
        """Take the row at exactly `position`, if it is next (call `before` first)."""
        row = await self.peek()
        if row is not None and (row[0], row[1], row[2]) == position:
            return self._buffer.popleft()
        return None

    async def rest(self) -> list[asyncpg.Record]:
        """Every row not taken yet."""
        out = []
        while await self.peek() is not None:
            out.append(self._buffer.popleft())
        return out


def in_log_order(
    table: str, topic: str = "kafka_topic", partition: str = "kafka_partition", *, columns: str = "*"
) -> str:
    """`SELECT topic, partition, offset, <columns> FROM table` in code-point order (as Python compares strings)."""
    return (
        f"SELECT {topic} AS p_topic, {partition} AS p_partition, kafka_offset AS p_offset, {columns} FROM {table} "
        f'ORDER BY {topic} COLLATE "C", {partition}, kafka_offset'
    )


__all__ = ["OrderedRows", "Position", "in_log_order"]
