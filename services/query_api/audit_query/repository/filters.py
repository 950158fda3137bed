"""The audit log's filters and search-language terms as SQL conditions on `audit_entries e` (and `audit_outcomes o`)."""

from datetime import datetime
from typing import Any, Final
from uuid import UUID

from audit_query.models import (
    AuditFilter,
)
from audit_query.repository.sql import PREFIX_END, Where, like_escaped
from audit_query.search import SearchTerm


def apply_filters(where: Where, f: AuditFilter) -> None:
    if f.tenant is not None:
        where.add("e.tenant_id = {}", f.tenant)
    if f.actions:
        where.add("e.action = ANY({}::text[])", [a.value for a in f.actions])
    if f.user_id is not None:
        where.add("e.actor_id = ANY({}::text[])", [f.user_id, *f.aliases.get(f.user_id, ())])
    if f.actor_type is not None:
        where.add("e.actor_type = {}", f.actor_type.value)
    if f.model is not None:
        where.add("e.entity_model = {}", f.model)
    if f.entity_id is not None:
        where.add("e.entity_id = ANY({}::text[])", [f.entity_id, *f.aliases.get(f.entity_id, ())])
    if f.correlation_id is not None:
        where.add("e.correlation_id = {}", f.correlation_id)
    if f.since is not None:
        where.add("e.occurred_at >= {}", f.since)
    if f.until is not None:
        where.add("e.occurred_at < {}", f.until)
    for term in f.terms:
        _apply_term(where, term, f.aliases)


TERM_COLUMNS: Final = {
    "action": "e.action",
    "user": "e.actor_id",
    "actor": "e.actor_type",
    "model": "e.entity_model",
    "entity": "e.entity_id",
    "tenant": "e.tenant_id",
    "correlation": "e.correlation_id",
    "source": "e.source",
}
_TEXT_COLUMNS: Final = ("e.actor_id", "e.actor_display_name", "e.entity_id", "e.entity_model", "e.source")


def _apply_term(where: Where, term: SearchTerm, aliases: dict[str, tuple[str, ...]]) -> None:
    """One search-language term as SQL; a negation also keeps rows where the column is null."""
    parts: list[str] = []

    def arg(value: Any) -> str:
        where.args.append(value)
        return f"${len(where.args)}"

    values = term.values
    if term.field == "after":
        parts.append(f"e.occurred_at >= {arg(datetime.fromisoformat(values[0]))}")
    elif term.field == "before":
        parts.append(f"e.occurred_at < {arg(datetime.fromisoformat(values[0]))}")
    elif term.field == "id":
        parts.append(f"e.audit_id = ANY({arg([UUID(v) for v in values])}::uuid[])")
    elif term.field == "outcome":
        statuses = [v for v in values if v != "in_progress"]
        if statuses:
            parts.append(f"o.status = ANY({arg(statuses)}::text[])")
        if len(statuses) < len(values):
            parts.append("o.audit_id IS NULL")
    elif term.field == "text":
        pattern = arg("%" + like_escaped(values[0]) + "%")
        parts.extend(f"{column} ILIKE {pattern}" for column in _TEXT_COLUMNS)
    else:
        column = TERM_COLUMNS[term.field]
        exact = [v for v in values if not v.endswith("*")]
        if term.field in ("user", "entity"):  # a sealed person is found by its pseudonyms (exact ids only)
            exact += [p for v in exact for p in aliases.get(v, ())]
        if exact:
            parts.append(f"{column} = ANY({arg(exact)}::text[])")
        for prefix in (v[:-1] for v in values if v.endswith("*")):
            # A range, not LIKE: it keeps the index under row-level security (LIKE is not leakproof).
            parts.append(f"({column} >= {arg(prefix)} AND {column} < {arg(prefix + PREFIX_END)})")
    condition = " OR ".join(parts)
    where.clauses.append(f"NOT coalesce(({condition}), false)" if term.negated else f"({condition})")
