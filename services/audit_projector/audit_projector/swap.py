"""Swap a verified rebuild in for the live read model without losing an event: pause the live projectors, let the
shadow catch up to their exact stored offsets, verify, rename both schemas in one transaction, resume."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from audit_projector.compare import Bounds, compare, stored_offsets
from audit_projector.config import Settings
from audit_projector.errors import ProjectorError, db_errors
from audit_projector.following import following
from audit_projector.integrity import verify_integrity
from audit_projector.migrations import register_on
from audit_projector.repository import PAUSE_LOCK, quoted
from audit_projector.state import ProjectorState
from audit_schemas import postgres
from audit_schemas.checkpoint import NoteSigner
from audit_schemas.read_model import SWAP_CHANNEL

log = structlog.get_logger(__name__)

_FOLLOW_POLL_MS = 20
"""How long the following rebuild waits on an empty poll: the most its halt, inside the hold, waits for it."""


class SwapRefusedError(ProjectorError):
    """The rebuild does not match the live model (or its checkpoints): nothing was replaced."""


@dataclass(frozen=True, slots=True)
class SwapResult:
    """What a swap replaced, and for how long the live projectors were held."""

    live: str
    retired: str
    paused_s: float
    rows_verified: int
    caught_up_s: float
    """Of the pause: the shadow's catch-up to the live offsets."""
    tail_compared_s: float
    """Of the pause: the comparison of what arrived since the bulk comparison."""


async def swap(live: Settings, shadow: Settings, owner_dsn: str, timeout_s: float) -> SwapResult:
    """Replace `live.db_schema` with `shadow.db_schema`, a rebuild that has already caught up once.

    The bulk of the comparison, and the check of the shadow's trees against the signed checkpoints, run before the
    pause (below the offsets both had then); during the pause only the rest is compared, so the hold lasts about
    as long as the shadow needs to catch up on what arrived since.
    Any mismatch refuses the swap and resumes the live projectors untouched.
    """
    retired = f"{live.db_schema}_retired_{datetime.now(UTC):%Y%m%d%H%M%S}"[:63]
    conn = await postgres.connect(owner_dsn)
    try:
        before = await _common(conn, live, shadow)
        checked = await _verify(conn, live, shadow, before, None)
        # The rebuild follows the log from here on, so the hold only waits for what arrives meanwhile.
        async with following(shadow.model_copy(update={"poll_timeout_ms": _FOLLOW_POLL_MS}), ProjectorState()) as f:
            await f.reach(await f.end_offsets(), timeout_s)
            await _pause(conn, live, f"swapping in {shadow.db_schema}")
            paused_at = time.perf_counter()
            try:
                targets = await stored_offsets(conn, live.db_schema, live.group_id)
                await f.reach(targets, timeout_s)
                await f.halt()  # nothing more is written to the rebuild: what is compared is what is swapped in
                caught_up_s = time.perf_counter() - paused_at
                checked += await _verify(conn, live, shadow, targets, before)
                tail_compared_s = time.perf_counter() - paused_at - caught_up_s
                with db_errors("cannot rename the schemas"):
                    async with conn.transaction():
                        await conn.execute(f"ALTER SCHEMA {quoted(live.db_schema)} RENAME TO {quoted(retired)}")
                        await conn.execute(
                            f"ALTER SCHEMA {quoted(shadow.db_schema)} RENAME TO {quoted(live.db_schema)}"
                        )
                        # The registry follows the OIDs: the rebuild is the live model now, the old one is retired.
                        await register_on(conn, live.control_schema, live.db_schema, "live")
                        await register_on(conn, live.control_schema, retired, "retired")
                        await _set_pause(
                            conn, live, False, f"swapped in {shadow.db_schema}; old model kept as {retired}"
                        )
                        await conn.execute("SELECT pg_notify($1, $2)", SWAP_CHANNEL, live.db_schema)
            except BaseException:
                await _set_pause(conn, live, False, "swap abandoned")
                raise
            paused_s = time.perf_counter() - paused_at
    finally:
        await conn.close()
    log.info(
        "read_model_swapped",
        live=live.db_schema,
        retired=retired,
        paused_s=round(paused_s, 3),
        caught_up_s=round(caught_up_s, 3),
        tail_compared_s=round(tail_compared_s, 3),
    )
    return SwapResult(live.db_schema, retired, paused_s, checked, caught_up_s, tail_compared_s)


async def _common(conn: asyncpg.Connection, live: Settings, shadow: Settings) -> Bounds:
    """Per partition, the offset both models have projected up to."""
    ours = await stored_offsets(conn, live.db_schema, live.group_id)
    theirs = await stored_offsets(conn, shadow.db_schema, live.group_id)
    return {k: min(n, ours.get(k, 0)) for k, n in theirs.items()}


async def _verify(
    conn: asyncpg.Connection, live: Settings, shadow: Settings, below: Bounds, since: Bounds | None
) -> int:
    """Compare the two models in [since, below) per partition, and the shadow's trees with the signed
    checkpoints; raise SwapRefusedError naming the first difference."""
    report = await compare(conn, live.db_schema, shadow.db_schema, below, since=since)
    problems = list(report.differences)
    key = live.signer_key()
    if key is not None and since is None:  # the shadow's trees against the signed checkpoints, before the pause
        await conn.execute(f"SET search_path = {quoted(shadow.db_schema)}")
        try:
            # The live projectors go on signing while the shadow lags: only checkpoints it has reached count.
            found = await verify_integrity(
                conn, live.control_schema, [NoteSigner.parse(key).verifier_key], live.log_name, lagging=True
            )
        finally:
            await conn.execute("RESET search_path")
        problems += [str(f) for f in found.findings]
    if problems:
        raise SwapRefusedError(
            f"the rebuild {shadow.db_schema} does not match {live.db_schema}: " + "; ".join(problems[:5])
        )
    return report.rows


async def _pause(conn: asyncpg.Connection, live: Settings, reason: str) -> None:
    """Hold the live projectors and wait out any batch already in flight: afterwards their offsets are final."""
    await _set_pause(conn, live, True, reason)
    with db_errors("cannot wait for the batches in flight"):
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", PAUSE_LOCK, live.db_schema)
        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", PAUSE_LOCK, live.db_schema)


async def _set_pause(conn: asyncpg.Connection, live: Settings, paused: bool, reason: str) -> None:
    with db_errors("cannot write the projector control row"):
        await conn.execute(
            f"""INSERT INTO {quoted(live.control_schema)}.projector_control (read_model, paused, reason)
                VALUES ($1, $2, $3)
                ON CONFLICT (read_model) DO UPDATE
                SET paused = EXCLUDED.paused, reason = EXCLUDED.reason, changed_by = current_user,
                    changed_at = now()""",
            live.db_schema,
            paused,
            reason,
        )


__all__ = ["SwapRefusedError", "SwapResult", "swap"]
