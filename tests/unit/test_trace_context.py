"""traceparent strings, contextvar propagation into threads, and time-ordered ids."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import pytest

from audit_producer import current_trace, resume_trace, run_in_executor
from audit_producer.ids import uuid7
from audit_schemas import Traceparent, TraceparentError


def test_traceparent_round_trip() -> None:
    audit_id = uuid4()
    parent = Traceparent.for_audit(audit_id)
    parsed = Traceparent.parse(str(parent))
    assert parsed.audit_id == audit_id
    assert parsed.trace_id == audit_id.hex
    assert str(parent).startswith(f"00-{audit_id.hex}-")


@pytest.mark.parametrize(
    "bad",
    ["", "00-xyz", f"00-{'0' * 32}-{'1' * 16}-01", f"00-{'a' * 32}-{'0' * 16}-01", f"01-{'a' * 32}-{'b' * 16}-01"],
)
def test_bad_traceparent_is_rejected(bad: str) -> None:
    with pytest.raises(TraceparentError):
        Traceparent.parse(bad)


async def test_trace_follows_into_executor_threads() -> None:
    audit_id = uuid4()
    with ThreadPoolExecutor(1) as pool:
        with resume_trace(str(Traceparent.for_audit(audit_id)), tenant_id="acme"):
            seen = await run_in_executor(pool, lambda: current_trace())
            plain = await asyncio.get_running_loop().run_in_executor(pool, lambda: current_trace())
        assert seen is not None
        assert (seen.audit_id, seen.tenant_id) == (audit_id, "acme")
        assert plain is None, "run_in_executor alone does not carry contextvars; ours does"
    assert current_trace() is None


def test_uuid7_is_time_ordered_and_versioned() -> None:
    ids = [uuid7() for _ in range(200)]
    assert all(u.version == 7 for u in ids)
    assert [u.int >> 80 for u in ids] == sorted(u.int >> 80 for u in ids)
    assert len(set(ids)) == 200
