"""The producer refuses bad actions up front and never swallows a failed publish."""

import asyncio
from typing import Any

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity, InvalidActionError, NotStartedError, PublishError
from audit_producer.config import Settings
from tests.conftest import Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka]

ENTITY = Entity(id="r-1", model="resource")
ACTOR = Actor.user("u-1", "Ada")


async def test_unknown_action_is_rejected_before_anything_is_sent(audit: AuditProducer) -> None:
    ran = False
    with pytest.raises(InvalidActionError, match="teleport"):
        async with audit.action("teleport", entity=ENTITY, actor=ACTOR, tenant="acme"):
            ran = True
    assert not ran


async def test_bad_tenant_is_rejected(audit: AuditProducer) -> None:
    with pytest.raises(InvalidActionError, match="tenant_id"):
        async with audit.action("create", entity=ENTITY, actor=ACTOR, tenant="has/slash"):
            pass


async def test_unstarted_producer_refuses(isolated: Isolated) -> None:
    producer = AuditProducer("svc", isolated.producer)
    with pytest.raises(NotStartedError):
        async with producer.action("create", entity=ENTITY, actor=ACTOR, tenant="acme"):
            pass


async def test_unreachable_broker_raises_publish_error() -> None:
    settings = Settings(bootstrap_servers="127.0.0.1:1", publish_timeout_s=1)
    with pytest.raises(PublishError):
        await AuditProducer("svc", settings).start()


async def test_missing_topic_fails_within_the_deadline(isolated: Isolated) -> None:
    settings = isolated.producer.model_copy(update={"audit_topic": f"{isolated.name}.missing", "publish_timeout_s": 2})
    ran = False
    async with AuditProducer("svc", settings) as producer:
        started = asyncio.get_running_loop().time()
        with pytest.raises(PublishError):
            async with producer.action("create", entity=ENTITY, actor=ACTOR, tenant="acme"):
                ran = True
        assert asyncio.get_running_loop().time() - started < 10
    assert not ran, "the body does not run when its start event was not recorded"


async def test_decorator_records_a_failure_and_reraises(
    audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    @audit.audited(
        "sync",
        entity=lambda a: Entity(id=a["integration_id"], model="integration"),
        actor=Actor.system("scheduler"),
        tenant="acme",
        correlation_id=lambda a: a["run"],
    )
    async def sync_integration(integration_id: str, run: str) -> None:
        raise TimeoutError(f"upstream {integration_id} did not answer")

    with pytest.raises(TimeoutError):
        await sync_integration("int-9", run="run-1")

    async def recorded() -> dict[str, Any] | None:
        body = (await api.get("/v1/audit", params={"entity_id": "int-9"})).json()
        done = body["count"] == 1 and body["data"][0]["outcome"]["status"] == "failed"
        return body["data"][0] if done else None

    entry = await eventually(recorded)
    assert entry["outcome"]["error"] == {"type": "TimeoutError", "message": "upstream int-9 did not answer"}
    assert entry["correlation_id"] == "run-1"
    assert entry["user"] == {"type": "system", "id": "scheduler", "display_name": None}


async def test_a_bad_outcome_value_is_recorded_with_a_marker_not_as_a_failure(
    audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    """The body's work was done: an unrecordable revision does not turn it into a failure."""
    async with audit.action("update", entity=ENTITY, actor=ACTOR, tenant="acme") as act:
        act.revision = -3

    async def recorded() -> dict[str, Any] | None:
        body = (await api.get("/v1/audit")).json()
        done = body["count"] == 1 and body["data"][0]["outcome"]["status"] == "succeeded"
        return body["data"][0] if done else None

    entry = await eventually(recorded)
    assert entry["outcome"]["revision"] is None
    assert "2**63-1" in entry["outcome"]["unrecorded"]["revision"]
