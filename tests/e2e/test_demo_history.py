"""The demo's generated history: imported with its own times, projected like any event, charts span days."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from audit_producer import AuditProducer
from audit_producer.demo import HISTORY_SOURCE, import_history
from audit_producer.errors import NotStartedError
from tests.conftest import Isolated, projector_running
from tests.e2e.test_search import all_entries
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_history_spans_days_tenants_and_outcomes(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    async with projector_running(isolated.projector):
        assert len(await import_history(audit, ["demo", "acme", "globex"], days=14, actions=120)) == 120

        async def projected() -> list[dict[str, Any]] | None:
            found = await all_entries(api, q=f"source:{HISTORY_SOURCE} -outcome:in_progress")
            return found if len(found) == 120 else None

        history = await eventually(projected, within=60)
    since = (datetime.now(UTC) - timedelta(days=15)).date().isoformat()
    days = await api.get(
        "/v1/audit/stats",
        params={"group_by": "bucket", "bucket": "day", "q": f"source:{HISTORY_SOURCE} after:{since}"},
    )
    assert days.status_code == 200, days.text
    per_day = days.json()["rows"]
    assert len(per_day) >= 7, per_day  # spread over the two weeks
    assert {e["tenant_id"] for e in history} == {"demo", "acme", "globex"}
    assert {e["outcome"]["status"] for e in history} == {"succeeded", "failed"}
    assert len({e["user"]["id"] for e in history}) >= 5


async def test_import_needs_a_started_producer(isolated: Isolated) -> None:
    producer = AuditProducer("idle", isolated.producer)
    with pytest.raises(NotStartedError):
        await import_history(producer, ["demo"], actions=1)
