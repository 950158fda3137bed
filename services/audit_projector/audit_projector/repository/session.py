"""The projector's own database sessions: named, on the read model's schema, with their timeouts."""

from typing import Final

import asyncpg

from audit_projector.errors import db_errors
from audit_schemas import postgres


def quoted(name: str) -> str:
    """A schema or table name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


WAITING_LEVELS: Final = frozenset({"on", "remote_write", "remote_apply"})
"""`synchronous_commit` levels that wait for a synchronous standby (when one is configured)."""

SESSION_SETTINGS: Final = {
    "lock_timeout": "15s",
    # Longer than a dead-letter publish, so only a stuck client loses its transaction.
    "idle_in_transaction_session_timeout": "120s",
    # A batch's statements take milliseconds; compiling one (hundreds of milliseconds, past the planner's cost
    # thresholds, which a large history or a disabled plan type crosses) never pays for itself here.
    "jit": "off",
}


async def open_session(
    dsn: str, schema: str, purpose: str, group_id: str, *, statement_timeout_s: float | None = None
) -> asyncpg.Connection:
    """A connection of the projector's own: `schema` first on the search path, named for what it does
    (`audit-projector/<purpose>/<group>`), with the session timeouts; driver errors as ProjectorErrors."""
    with db_errors(f"cannot open the {purpose} connection"):
        conn: asyncpg.Connection = await postgres.connect(
            dsn,
            command_timeout=statement_timeout_s,
            server_settings={
                "search_path": schema,
                "application_name": f"audit-projector/{purpose}/{group_id}"[:63],
                **SESSION_SETTINGS,
            },
        )
    return conn
