"""SQL building blocks shared by the repositories: conditions with their arguments, literals, the tenant scope."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from audit_query.errors import BadRequestError


@dataclass(slots=True)
class Where:
    """Conditions and their positional arguments, built up one filter at a time."""

    clauses: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, template: str, *values: Any) -> None:
        """`template` uses {} for each value's placeholder."""
        placeholders = []
        for value in values:
            self.args.append(value)
            placeholders.append(f"${len(self.args)}")
        self.clauses.append(template.format(*placeholders))

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


@contextlib.asynccontextmanager
async def tenants_transaction(
    conn: "PoolConnectionProxy[asyncpg.Record]", tenants: str, isolation: str = "READ COMMITTED"
) -> AsyncIterator[None]:
    """A read-only transaction whose `audit.tenants` names `tenants`, opened in one round trip (the setting as a
    literal: tenant ids match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ and are quoted anyway); committed after the block,
    rolled back if it raises."""
    await conn.execute(
        f"BEGIN ISOLATION LEVEL {isolation} READ ONLY; SELECT set_config('audit.tenants', {literal(tenants)}, true)"
    )
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def iso_utc(column: str) -> str:
    """A timestamptz as the API writes times everywhere (pydantic's form): ISO 8601 in UTC ending in `Z`, with
    six digits of microseconds only when there are any."""
    utc = f"{column} AT TIME ZONE 'UTC'"
    return (
        f"""to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN date_part('microseconds', {column})::bigint """
        f"""% 1000000 = 0 THEN '' ELSE to_char({utc}, '.US') END || 'Z'"""
    )


def tenant_scope(where: Where, tenants: str, column: str = "e.tenant_id") -> None:
    """The caller's tenants as a plain condition as well: row-level security alone admits the same rows, but its
    function hides them from the planner, which then walks a time index through every tenant to find a small
    tenant's rows. This lets it use the tenant indexes."""
    if tenants == "*":
        return
    names = [t for t in tenants.split(",") if t]
    if len(names) == 1:  # equality, not ANY: an index scan then also yields the sort order (newest first)
        where.add(column + " = {}", names[0])
    else:
        where.add(column + " = ANY({}::text[])", names)


PREFIX_END: Final = "\U0010ffff"
"""Appended to a prefix, the exclusive upper bound of every string that starts with it (code-point order)."""


def literal(text: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only the quote needs doubling); no NUL."""
    if "\x00" in text:
        raise BadRequestError("a tenant id cannot contain NUL")
    return "'" + text.replace("'", "''") + "'"


def limit_sql(n: int) -> str:
    """A row limit written into the SQL rather than bound: with `LIMIT $n` the planner cannot cost a generic plan
    (it assumes a tenth of the rows), so every execution is planned again, which on the partitioned tables with
    row-level security costs as much as running the query; a literal lets the prepared statement keep one plan."""
    value = int(n)
    if not 0 <= value <= 1_000_000:
        raise ValueError(f"row limit out of range: {value}")
    return str(value)


def like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def quoted(schema: str) -> str:
    if not schema.replace("_", "a").isalnum() or (not schema[0].isalpha() and schema[0] != "_"):
        raise ValueError(f"not a plain schema name: {schema!r}")
    return f'"{schema}"'
