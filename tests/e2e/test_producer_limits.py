"""Every limit of the start event's contract, from the producer's side: the exact bytes it would publish go through
the projector's own check, so a model built without validation or grown by redaction is refused before the body
runs and before anything is sent; values at the limit are recorded and projected."""

from typing import Any

import pytest

from audit_producer import Actor, AuditProducer, Entity, RequestContext
from audit_producer.errors import InvalidActionError
from audit_schemas import ActorType
from tests.conftest import Isolated, projector_running
from tests.factories import read_topic
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

OK_ENTITY = Entity(id="r-1", model="resource")
OK_ACTOR = Actor.user("u-1", "Ada")

OVER: dict[str, dict[str, Any]] = {
    "entity id over 256": {"entity": Entity.model_construct(id="e" * 257, model="resource")},
    "empty entity id": {"entity": Entity.model_construct(id="", model="resource")},
    "entity id with a NUL": {"entity": Entity.model_construct(id="a\x00b", model="resource")},
    "entity model not a name": {"entity": Entity.model_construct(id="r-1", model="Bad-Model")},
    "entity model over 64": {"entity": Entity.model_construct(id="r-1", model="m" * 65)},
    "actor id over 256": {"actor": Actor.model_construct(type=ActorType.USER, id="u" * 257, display_name=None)},
    "actor name over 256": {"actor": Actor.model_construct(type=ActorType.USER, id="u-1", display_name="n" * 257)},
    "user without an id": {"actor": Actor.model_construct(type=ActorType.USER, id=None, display_name="Ada")},
    "actor name with a lone surrogate": {
        "actor": Actor.model_construct(type=ActorType.USER, id="u-1", display_name="\ud800")
    },
    "user agent over 1024": {"request": RequestContext.model_construct(user_agent="a" * 1025)},
    "user agent grown over 1024 by redaction": {"request": RequestContext(user_agent="a" * 1010 + " token=abc")},
    "request id over 256": {"request": RequestContext.model_construct(request_id="q" * 257)},
    "client address not an address": {
        "request": RequestContext.model_construct(client_ip="not-an-ip")  # type: ignore[arg-type]
    },
    "correlation id over 256": {"correlation_id": "c" * 257},
    "tenant not an id": {"tenant": "bad tenant!"},
    "tenant over 64": {"tenant": "t" * 65},
}

AT_LIMIT: dict[str, dict[str, Any]] = {
    "entity id of 256": {"entity": Entity(id="e" * 256, model="resource")},
    "actor name of 256": {"actor": Actor.user("u" * 256, "n" * 256)},
    "user agent of 1024": {"request": RequestContext(user_agent="a" * 1024, request_id="q" * 256)},
    "tenant of 64": {"tenant": "t" * 64},
}


def _arguments(case: dict[str, Any]) -> dict[str, Any]:
    return {"entity": OK_ENTITY, "actor": OK_ACTOR, "tenant": "acme", **case}


async def test_each_limit_is_refused_before_the_body_and_nothing_is_sent(
    isolated: Isolated, audit: AuditProducer
) -> None:
    ran: list[str] = []
    for why, case in OVER.items():
        with pytest.raises(InvalidActionError) as refused:
            async with audit.action("update", **_arguments(case)):
                ran.append(why)
        assert len(str(refused.value)) > 10, why  # a message that says what is wrong
    assert ran == [], f"bodies ran although their start would be refused: {ran}"
    with pytest.raises(InvalidActionError):
        async with audit.action("update", entity=OVER["entity id over 256"]["entity"], actor=OK_ACTOR, tenant="a"):
            pass
    assert await read_topic(isolated.stack.bootstrap, isolated.producer.audit_topic) == []


async def test_values_at_each_limit_are_recorded_and_projected(isolated: Isolated, audit: AuditProducer) -> None:
    ids = []
    async with projector_running(isolated.projector):
        for case in AT_LIMIT.values():
            async with audit.action("update", **_arguments(case)) as act:
                ids.append(act.audit_id)

        async def projected() -> bool:
            async with isolated.owner() as conn:
                n = await conn.fetchval("SELECT count(*) FROM audit_outcomes WHERE audit_id = ANY($1::uuid[])", ids)
                dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
            assert dead == 0
            return bool(n == len(ids))

        await eventually(projected, within=30)
