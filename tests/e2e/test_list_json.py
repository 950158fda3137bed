"""The list, entity, entry and trace pages' entries are built as JSON by PostgreSQL; each must equal, field for
field, the entry the repository builds in Python (the live view's form), for every kind of entry."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity, RequestContext
from audit_query.pools import Pools
from audit_query.repository import AuditRepository
from audit_schemas import encode
from tests.conftest import Isolated, projector_running
from tests.e2e.test_search import all_entries, seed_history
from tests.factories import action_event, outcome_event, send_raw
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _at(event: Any, when: datetime) -> Any:
    """The event re-timed (envelope and start) to `when`."""
    data = event.data.model_copy(update={"started_at": when})
    return event.model_copy(update={"time": when, "data": data})


async def test_page_rows_equal_the_entries_the_api_builds_in_python(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    async with projector_running(isolated.projector):
        await seed_history(isolated, audit)  # succeeded, failed, and an action still running
        request = RequestContext(request_id="req-1", client_ip="2001:db8::7", user_agent='curl/8 "quoted" \\ ünï')
        async with audit.action(
            "update", entity=Entity(id="inv/9 ü", model="invoice"), actor=Actor.service_account("sa-1", "CI"),
            tenant="acme", request=request, correlation_id="corr-1",
        ) as act:  # fmt: skip
            act.change("amount", 100, {"net": 120.5, "lines": [1, None, "x"]})
        # On the second exactly (no microseconds), long ago: its missing outcome reads as unknown.
        whole = _at(action_event("res-old", action="retry"), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        # Microseconds ending in zeros, with an outcome that could not record a value.
        tenths = _at(action_event("res-new", action="sync"), datetime.now(UTC).replace(microsecond=100000))
        ended = outcome_event(tenths, "succeeded", unrecorded={"blob": "over 64 KiB"})
        late = _at(action_event("res-late", action="enable"), datetime.now(UTC) - timedelta(hours=3))
        await send_raw(
            isolated.stack.bootstrap,
            isolated.projector.audit_topic,
            [(encode(whole), 0), (encode(tenths), 1), (encode(ended), 1), (encode(late), 2)],
        )

        previous: list[dict[str, Any]] = []

        async def everything() -> list[dict[str, Any]] | None:
            nonlocal previous
            found = await all_entries(api)
            done = len(found) == 15 and all(
                any(e["outcome"]["status"] == "succeeded" for e in found if e["entity"]["id"] == entity)
                for entity in ("res-new", "inv/9 ü")
            )
            settled = found == previous  # two reads alike: no outcome still on its way
            previous = found
            return found if done and settled else None

        listed = await eventually(everything, within=60)
    statuses = {e["outcome"]["status"] for e in listed}
    assert {"succeeded", "failed", "in_progress", "unknown"} <= statuses, statuses
    unknown_after = timedelta(seconds=isolated.query.unknown_after_s)
    pools = await Pools.open(isolated.stack.query_dsn, None, isolated.name)
    repo = AuditRepository(pools.read, unknown_after)
    try:
        for entry in listed:
            records, _ = await repo.trace_since("*", UUID(entry["audit_id"]), {}, 1)
            built = records[0].item  # the entry as the live view builds it, in Python
            assert entry == json.loads(built.model_dump_json()), entry["audit_id"]
            single = (await api.get(f"/v1/audit/{entry['audit_id']}")).json()["entry"]
            assert entry == single, entry["audit_id"]
            trace = (await api.get(f"/v1/traces/{entry['trace_id']}")).json()["entry"]
            assert entry == trace, entry["audit_id"]
    finally:
        await pools.close()
    by_entity = {e["entity"]["id"]: e for e in listed}
    assert by_entity["res-old"]["time"] == "2026-01-02T03:04:05Z"
    assert by_entity["res-new"]["time"].endswith(".100000Z")
    assert by_entity["res-new"]["outcome"]["unrecorded"] == {"blob": "over 64 KiB"}
    assert by_entity["inv/9 ü"]["request"]["client_ip"] == "2001:db8::7"
    # The entity page (log order) carries the same rows.
    page = (await api.get("/v1/entities/invoice/inv%2F9%20%C3%BC/audit")).json()
    assert page["data"] == [by_entity["inv/9 ü"]]
    assert page["count"] == 1
    assert page["next_cursor"] is None
