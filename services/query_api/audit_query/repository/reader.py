"""The read pool's one way to run a statement (inside the caller's tenants) and an entry row as the API's model."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import asyncpg

from audit_query.errors import store_errors
from audit_query.models import (
    AuditEntryPublic,
    EntityPublic,
    ErrorPublic,
    ExecutionLogPublic,
    OutcomePublic,
    RequestPublic,
    UserPublic,
)
from audit_query.repository.sql import iso_utc, tenants_transaction
from audit_query.unsealing import Unsealer
from audit_schemas.sealing import SEALED_MARK

LineT = TypeVar("LineT", bound=ExecutionLogPublic)

ENTRY_SELECT: Final = """
SELECT e.audit_id, e.occurred_at, e.tenant_id, e.action, e.entity_model, e.entity_id, e.actor_type,
       e.actor_id, e.actor_display_name, e.user_sort, e.request_id, host(e.client_ip) AS client_ip, e.user_agent,
       e.correlation_id, e.otel_trace_id, e.source, e.kafka_partition, e.kafka_offset,
       o.status, o.error_type, o.error_message, o.revision, o.changes, o.finished_at, o.duration_ms, o.unrecorded,
       e.kafka_topic, o.kafka_topic AS outcome_topic, o.kafka_partition AS outcome_partition,
       o.kafka_offset AS outcome_offset, e.sealed
  FROM audit_entries e
  LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id
"""


class Reader:
    """Reads the projector's tables through the read pool (its sessions use the read-model schema)."""

    def __init__(self, pool: asyncpg.Pool, unknown_after: timedelta, unsealer: Unsealer | None = None) -> None:
        self._pool = pool
        self._unknown_after = unknown_after
        self._unsealer = unsealer or Unsealer(None)

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Postgres answers."""
        await self._fetch("SELECT 1")

    async def _fetch(self, sql: str, *args: Any, tenants: str | None = None) -> list[asyncpg.Record]:
        """Run one statement; with `tenants`, inside a transaction whose `audit.tenants` names them.

        The setting is transaction-local (`set_config(..., true)`), never a session-wide SET on a pooled
        connection; row-level security in PostgreSQL then admits only those tenants' rows.
        """
        with store_errors():
            if tenants is None:
                rows: list[asyncpg.Record] = await self._pool.fetch(sql, *args)
                return rows
            async with self._pool.acquire() as conn, tenants_transaction(conn, tenants):
                rows = await conn.fetch(sql, *args)
        return rows

    async def _opened_entry(self, r: asyncpg.Record) -> AuditEntryPublic:
        """`_entry` with the caller's sealed fields opened (or marked erased)."""
        entry = self._entry(r)
        if r["sealed"] is None and (r["changes"] is None or SEALED_MARK not in r["changes"]):
            return entry
        doc = entry.model_dump(mode="json")
        doc["sealed"] = None if r["sealed"] is None else json.loads(r["sealed"])
        await self._unsealer.entries([doc])
        return AuditEntryPublic.model_validate(doc)

    async def _opened_logs(self, lines: list[LineT], stored: list[str], tenant: str) -> list[LineT]:
        """Log lines of one tenant with their sealed fields opened (`stored`: each line's fields as stored)."""
        if not any(SEALED_MARK in fields for fields in stored):
            return lines
        docs = [line.model_dump(mode="json") for line in lines]
        await self._unsealer.logs(docs, tenant)
        return [type(line).model_validate(doc) for line, doc in zip(lines, docs, strict=True)]

    def _entry(self, r: asyncpg.Record) -> AuditEntryPublic:
        has_request = any(r[k] is not None for k in ("request_id", "client_ip", "user_agent"))
        return AuditEntryPublic(
            audit_id=r["audit_id"],
            trace_id=r["audit_id"].hex,
            time=r["occurred_at"],
            tenant_id=r["tenant_id"],
            event=r["action"],
            user=UserPublic(type=r["actor_type"], id=r["actor_id"], display_name=r["actor_display_name"]),
            entity=EntityPublic(id=r["entity_id"], model=r["entity_model"]),
            request=RequestPublic(request_id=r["request_id"], client_ip=r["client_ip"], user_agent=r["user_agent"])
            if has_request
            else None,
            correlation_id=r["correlation_id"],
            otel_trace_id=r["otel_trace_id"],
            source=r["source"],
            outcome=self._outcome(r),
        )

    def _outcome(self, r: asyncpg.Record) -> OutcomePublic:
        if r["status"] is None:
            late = datetime.now(UTC) - r["occurred_at"] > self._unknown_after
            return OutcomePublic(status="unknown" if late else "in_progress")
        error = ErrorPublic(type=r["error_type"], message=r["error_message"] or "") if r["error_type"] else None
        return OutcomePublic(
            status=r["status"],
            error=error,
            revision=r["revision"],
            changes=json.loads(r["changes"]) if r["changes"] is not None else None,
            finished_at=r["finished_at"],
            duration_ms=r["duration_ms"],
            unrecorded=json.loads(r["unrecorded"]) if r["unrecorded"] is not None else None,
        )


def entry_json(unknown_after: timedelta) -> str:
    """An entry and its outcome as AuditEntryPublic's JSON, built by PostgreSQL: a page of rows then costs the
    API no model per row (the same fields, in the same order, as `AuditRepository._entry` builds)."""
    late = f"interval '{int(unknown_after.total_seconds() * 1_000_000)} microseconds'"
    pending = (
        f"json_build_object('status', CASE WHEN now() - e.occurred_at > {late} THEN 'unknown' ELSE 'in_progress' END,"
        " 'error', NULL, 'revision', NULL, 'changes', NULL, 'finished_at', NULL, 'duration_ms', NULL,"
        " 'unrecorded', NULL)"
    )
    ended = (
        "json_build_object('status', o.status, 'error', CASE WHEN coalesce(o.error_type, '') = '' THEN NULL"
        " ELSE json_build_object('type', o.error_type, 'message', coalesce(o.error_message, '')) END,"
        f" 'revision', o.revision, 'changes', o.changes, 'finished_at', {iso_utc('o.finished_at')},"
        " 'duration_ms', o.duration_ms, 'unrecorded', o.unrecorded)"
    )
    built = (
        "json_build_object('audit_id', e.audit_id, 'trace_id', replace(e.audit_id::text, '-', ''),"
        f" 'time', {iso_utc('e.occurred_at')}, 'tenant_id', e.tenant_id, 'event', e.action,"
        " 'user', json_build_object('type', e.actor_type, 'id', e.actor_id, 'display_name', e.actor_display_name),"
        " 'entity', json_build_object('id', e.entity_id, 'model', e.entity_model),"
        " 'request', CASE WHEN e.request_id IS NULL AND e.client_ip IS NULL AND e.user_agent IS NULL THEN NULL"
        " ELSE json_build_object('request_id', e.request_id, 'client_ip', host(e.client_ip),"
        " 'user_agent', e.user_agent) END,"
        " 'correlation_id', e.correlation_id, 'otel_trace_id', e.otel_trace_id, 'source', e.source,"
        f" 'outcome', CASE WHEN o.status IS NULL THEN {pending} ELSE {ended} END)::text"
    )
    # Sealed fields ride along by path for the API to open (and drop): only on entries that have them.
    return f"(left({built}, -1) || coalesce(',\"sealed\":' || e.sealed::text, '') || '}}')"


def log_public(r: asyncpg.Record) -> ExecutionLogPublic:
    return ExecutionLogPublic(
        log_id=r["log_id"],
        time=r["logged_at"],
        level=r["level"],
        logger=r["logger"],
        message=r["message"],
        fields=json.loads(r["fields"]),
        process=r["process"],
        source=r["source"],
    )
