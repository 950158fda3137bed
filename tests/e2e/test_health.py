"""Liveness and readiness report Postgres, Kafka and projector lag as they really are."""

import asyncio
from typing import Any

import pytest

from tests.conftest import Isolated, projector_running, query_client
from tests.factories import publish_events
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_lag_is_reported_until_the_projector_catches_up(isolated: Isolated) -> None:
    await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 40)
    async with query_client(isolated.query) as client:
        body = (await client.get("/readyz")).json()
        assert body["checks"]["projector_lag"]["total"] == 40, "nothing projected yet"
        strict = isolated.query.model_copy(update={"max_ready_lag": 10})
        async with query_client(strict) as strict_client:
            strict_response = await strict_client.get("/readyz")
            assert strict_response.status_code == 200, "lag does not take the read API out of service"
            assert strict_response.json()["status"] == "degraded"
            assert strict_response.json()["problems"] == ["projector 40 records behind"]
        async with projector_running(isolated.projector):

            async def caught_up() -> dict[str, Any] | None:
                response = await client.get("/readyz")
                body = response.json()
                done = body["status"] == "ok" and body["checks"]["projector_lag"]["total"] == 0
                return body if done else None

            body = await eventually(caught_up)
    assert body["checks"]["postgres"] == {"ok": True}
    assert body["checks"]["kafka"] == {"ok": True}
    assert body["checks"]["blocked_partitions"] == []


async def test_readiness_answers_at_once_when_a_topic_does_not_exist_yet(isolated: Isolated) -> None:
    await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 3)
    settings = isolated.query.model_copy(update={"topics": (isolated.projector.audit_topic, f"{isolated.name}.none")})
    async with query_client(settings) as client:
        for _ in range(3):  # the probe's client is reused between answers
            response = await asyncio.wait_for(client.get("/readyz"), 5)
            body = response.json()
            assert body["checks"]["kafka"] == {"ok": True}
            partitions = body["checks"]["projector_lag"]["partitions"]
            assert len(partitions) == 6
            assert all(name.startswith(isolated.projector.audit_topic) for name in partitions)
            assert body["checks"]["projector_lag"]["total"] == 3


@pytest.mark.parametrize(("broken", "status", "code"), [("kafka", "degraded", 200), ("postgres", "unavailable", 503)])
async def test_unreachable_dependency_degrades_or_takes_reads_out_but_stays_alive(
    isolated: Isolated, broken: str, status: str, code: int
) -> None:
    update: dict[str, Any] = (
        {"bootstrap_servers": "127.0.0.1:1"}
        if broken == "kafka"
        else {"database_url": "postgresql://audit_query:audit_query@127.0.0.1:1/audit"}
    )
    token = await isolated.token()
    async with query_client(isolated.query.model_copy(update=update), token) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
        assert response.status_code == code
        body = response.json()
        assert body["status"] == status
        assert body["checks"][broken]["ok"] is False
        assert body["checks"][broken]["error"]
        audit = await client.get("/v1/audit")
        if broken == "postgres":
            assert audit.status_code == 503
            assert "unavailable" in audit.json()["detail"]
        else:
            assert audit.status_code == 200, "reads need only PostgreSQL"
