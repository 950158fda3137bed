"""Bad query input gets a 4xx with a message, never a 500; unknown ids get a 404."""

from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity
from tests.conftest import Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/audit", {"sort": "size"}, 422),
        ("/v1/audit", {"order": "sideways"}, 422),
        ("/v1/audit", {"event": "teleport"}, 422),
        ("/v1/audit", {"actor_type": "robot"}, 422),
        ("/v1/audit", {"since": "yesterday"}, 422),
        ("/v1/audit", {"since": "2026-01-01T00:00:00"}, 422),  # no offset: ambiguous
        ("/v1/audit", {"until": "2026-13-01T00:00:00Z"}, 422),
        ("/v1/audit", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 400),
        ("/v1/audit", {"limit": 0}, 422),
        ("/v1/audit", {"limit": "many"}, 422),
        ("/v1/audit", {"cursor": "not-a-cursor"}, 400),
        ("/v1/audit", {"cursor": "%%%"}, 400),
        ("/v1/audit", {"cursor": "eyJ2IjoxfQ"}, 400),
        ("/v1/audit/not-a-uuid", {}, 422),
        (f"/v1/audit/{uuid4()}", {}, 404),
        ("/v1/traces/xyz", {}, 422),
        (f"/v1/traces/{uuid4().hex}", {}, 404),
        ("/v1/entities/Bad Model/x/audit", {}, 422),
        ("/v1/entities/resource/nothing-here/audit", {}, 404),
        ("/v1/entities/resource/x/audit", {"cursor": "garbage"}, 400),
    ],
)
async def test_bad_input(api: httpx.AsyncClient, path: str, params: dict[str, Any], status: int) -> None:
    response = await api.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["detail"], "every error says what was wrong"


async def test_cursor_is_bound_to_its_query(audit: AuditProducer, projector: Any, api: httpx.AsyncClient) -> None:
    for i in range(3):
        async with audit.action(
            "create", entity=Entity(id=f"c-{i}", model="resource"), actor=Actor.system(), tenant="t"
        ):
            pass

    async def three() -> bool:
        return bool((await api.get("/v1/audit")).json()["count"] == 3)

    await eventually(three)
    cursor = (await api.get("/v1/audit", params={"limit": 1, "sort": "time"})).json()["next_cursor"]
    assert cursor
    assert (await api.get("/v1/audit", params={"limit": 1, "cursor": cursor})).status_code == 200
    for other in ({"sort": "user"}, {"order": "asc"}, {"model": "resource"}, {"event": "create"}):
        response = await api.get("/v1/audit", params={"limit": 1, "cursor": cursor, **other})
        assert response.status_code == 400, other
        assert "different query" in response.json()["detail"]
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    assert (await api.get("/v1/audit", params={"limit": 1, "cursor": tampered})).status_code == 400
    entity_cursor = (await api.get("/v1/entities/resource/c-0/audit", params={"limit": 1})).json()["next_cursor"]
    assert entity_cursor is None
    response = await api.get("/v1/entities/resource/c-0/audit", params={"cursor": cursor})
    assert response.status_code == 400


async def test_a_connection_closed_under_the_api_is_a_503_then_recovers(
    isolated: Isolated, api: httpx.AsyncClient
) -> None:
    """The database ends the API's sessions: requests get a JSON 503 (never a 500) and the pool reconnects."""
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to terminate sessions")
    assert (await api.get("/v1/audit")).status_code == 200
    admin = await asyncpg.connect(isolated.stack.admin_dsn)
    try:
        statuses = []
        for _ in range(5):
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'audit-query'"
            )
            response = await api.get("/v1/audit")
            statuses.append(response.status_code)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert "unavailable" in response.json()["detail"]
    finally:
        await admin.close()
    assert (await api.get("/v1/audit")).status_code == 200
