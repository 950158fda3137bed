"""One action's trace: its entry, outcome and execution-log lines, paged and live."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from audit_query.errors import BadRequestError
from audit_query.models import (
    AuditEntryPublic,
    ExecutionLogPublic,
)
from audit_query.repository.reader import ENTRY_SELECT, Reader, entry_json, log_public
from audit_query.repository.sql import limit_sql
from audit_query.unsealing import has_sealed
from audit_schemas.sealing import SEALED_MARK


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """Something recorded under a trace, at its place in the log (stable across rebuilds)."""

    kind: Literal["entry", "outcome", "log"]
    topic: str
    partition: int
    offset: int
    item: AuditEntryPublic | ExecutionLogPublic


@dataclass(frozen=True, slots=True)
class TraceJson:
    """An entry and a page of its execution-log lines as JSON text, whether more lines follow, and the (time,
    log id) key of the page's last line (where the next page starts)."""

    entry: str
    logs: str
    truncated: bool
    last: tuple[str, str] | None


class TraceQueries(Reader):
    """An entry with its log lines."""

    async def trace_since(
        self, tenants: str, audit_id: UUID, positions: dict[tuple[str, int], int], limit: int
    ) -> tuple[list[TraceRecord], bool]:
        """The trace's entry, outcome and log lines stored after `positions` (per topic partition, the last offset
        already delivered), in log order: what a live view has not shown yet; and whether the action has ended.
        Lines appear with their entry."""
        entry_rows = await self._fetch(f"{ENTRY_SELECT} WHERE e.audit_id = $1 LIMIT 1", audit_id, tenants=tenants)
        keys = list(positions)
        rows = await self._fetch(
            f"""SELECT l.log_id, l.logged_at, l.level, l.logger, l.message, l.fields, l.process, l.source,
                      l.kafka_topic, l.kafka_partition, l.kafka_offset
                 FROM execution_logs l
                 JOIN audit_entries e ON e.audit_id = $1 AND e.tenant_id = l.tenant_id
                 LEFT JOIN unnest($2::text[], $3::int[], $4::bigint[]) AS p(topic, part, off)
                   ON p.topic = l.kafka_topic AND p.part = l.kafka_partition
                WHERE l.trace_id = $1 AND l.kafka_offset > coalesce(p.off, -1)
                ORDER BY l.kafka_topic, l.kafka_partition, l.kafka_offset LIMIT {limit_sql(limit)}""",
            audit_id,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [positions[k] for k in keys],
            tenants=tenants,
        )
        if not entry_rows:
            return [], False
        out: list[TraceRecord] = []
        r = entry_rows[0]
        entry = await self._opened_entry(r)
        if r["kafka_offset"] > positions.get((r["kafka_topic"], r["kafka_partition"]), -1):
            out.append(TraceRecord("entry", r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], entry))
        if r["status"] is not None:
            at = (r["outcome_topic"], r["outcome_partition"], r["outcome_offset"])
            if at[2] > positions.get((at[0], at[1]), -1):
                out.append(TraceRecord("outcome", at[0], at[1], at[2], entry))
        lines = await self._opened_logs([log_public(row) for row in rows], [r["fields"] for r in rows], entry.tenant_id)
        out.extend(
            TraceRecord("log", row["kafka_topic"], row["kafka_partition"], row["kafka_offset"], line)
            for row, line in zip(rows, lines, strict=True)
        )
        return out, r["status"] is not None

    async def trace_json(
        self, tenants: str, audit_id: UUID, limit: int, after: Sequence[Any] | None = None
    ) -> TraceJson | None:
        """An entry (as AuditEntryPublic's JSON) and a page of its trace's execution-log lines in time order, in
        one statement built by PostgreSQL; None when there is no such entry among `tenants`. `after`: the (time,
        log id) key of the previous page's last line. Only lines whose tenant is their entry's: a guessed trace id
        never shows another tenant's lines."""
        page, args = _logs_page(audit_id, limit, after)
        rows = await self._fetch(
            f"""SELECT (SELECT {entry_json(self._unknown_after)}
                          FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id
                         WHERE e.audit_id = $1 LIMIT 1) AS entry, p.*
                  FROM ({page}) AS p""",
            *args,
            tenants=tenants,
        )
        r = rows[0]
        if r["entry"] is None:
            return None
        last = (r["last_time"], r["last_id"]) if r["last_time"] is not None else None
        entry, logs = str(r["entry"]), str(r["logs"])
        if has_sealed(entry):
            entry = (await self._unsealer.entry_texts([entry]))[0]
        if SEALED_MARK in logs:
            docs = json.loads(logs)
            await self._unsealer.logs(docs, json.loads(entry)["tenant_id"])
            logs = json.dumps(docs, ensure_ascii=False, separators=(",", ":"))
        return TraceJson(entry, logs, bool(r["truncated"]), last)


def _logs_page(audit_id: UUID, limit: int, after: Sequence[Any] | None) -> tuple[str, list[Any]]:
    """The statement for one page of a trace's log lines (`$1` the audit id): the page as a JSON array, whether
    more follow, and the last line's key. A first page and a following one are different statements, each with
    one plan (an optional cursor written as `$2 IS NULL OR …` would be planned again for every call)."""
    n = int(limit_sql(limit))
    args: list[Any] = [audit_id]
    cursor = ""
    if after is not None:
        args += [datetime.fromisoformat(str(after[0]).replace(" ", "T")), UUID(str(after[1]))]
        cursor = "AND (l.logged_at, l.log_id) > ($2::timestamptz, $3::uuid)"
    return (
        f"""SELECT coalesce(json_agg(json_build_object(
                       'log_id', l.log_id, 'time', l.logged_at, 'level', l.level, 'logger', l.logger,
                       'message', l.message, 'fields', l.fields, 'process', l.process, 'source', l.source)
                     ORDER BY l.logged_at, l.log_id) FILTER (WHERE l.n <= {n}), '[]')::text AS logs,
                   count(*) > {n} AS truncated,
                   (array_agg(l.logged_at::text ORDER BY l.logged_at DESC, l.log_id DESC)
                      FILTER (WHERE l.n <= {n}))[1] AS last_time,
                   (array_agg(l.log_id::text ORDER BY l.logged_at DESC, l.log_id DESC)
                      FILTER (WHERE l.n <= {n}))[1] AS last_id
              FROM (SELECT l.*, row_number() OVER (ORDER BY l.logged_at, l.log_id) AS n
                      FROM execution_logs l
                      JOIN audit_entries e ON e.audit_id = $1 AND e.tenant_id = l.tenant_id
                     WHERE l.trace_id = $1 {cursor}
                     ORDER BY l.logged_at, l.log_id LIMIT {n + 1}) AS l""",
        args,
    )


def check_log_key(key: Sequence[Any]) -> None:
    """A trace page cursor's key is (time, log id) as text; anything else is a 400 (a cursor from elsewhere)."""
    try:
        if len(key) != 2:
            raise ValueError("two values expected")
        datetime.fromisoformat(str(key[0]).replace(" ", "T"))
        UUID(str(key[1]))
    except (TypeError, ValueError) as e:
        raise BadRequestError("logs_after is not a cursor of this trace's log lines") from e
