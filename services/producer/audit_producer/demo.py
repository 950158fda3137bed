"""A demo upstream service: performs all 13 actions with execution logs, then shows them from the API."""

import asyncio
import logging
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
import structlog

from audit_producer.context import run_in_executor
from audit_producer.ids import uuid7
from audit_producer.logship import add_trace_context
from audit_producer.producer import AuditProducer
from audit_schemas import (
    Action,
    ActionEvent,
    ActionOutcome,
    ActionStarted,
    Actor,
    Entity,
    ErrorSummary,
    OutcomeEvent,
    OutcomeStatus,
    RequestContext,
)
from audit_schemas.topics import audit_key

stdlib_log = logging.getLogger("resource_service.worker")


class DemoFailure(RuntimeError):
    """The failure the demo provokes on purpose, so a failed outcome shows up too."""


def configure_logging(audit: AuditProducer) -> None:
    """Tag and ship execution logs from structlog and from stdlib logging."""
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            add_trace_context,
            audit.logs,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(audit.logs.handler())


def _blocking_step(resource_id: str) -> str:
    """Work in a thread: its stdlib log lines still carry the action's trace."""
    stdlib_log.info("rendered template for %s in a worker thread", resource_id)
    return f"plan-{resource_id}"


async def perform_all(audit: AuditProducer, tenant: str) -> list[str]:
    """One action of each type on a handful of entities; returns their audit ids."""
    log = structlog.get_logger().bind(logger="resource_service")  # bound after configure_logging()
    alice = Actor.user("u-alice", "Alice Example")
    bob = Actor.user("u-bob", "Bob Example")
    ci = Actor.service_account("sa-ci", "CI pipeline")
    request = RequestContext(request_id=f"req-{random.randrange(10**6)}", client_ip="127.0.0.1", user_agent="demo")
    resource = Entity(id=f"res-{int(time.time())}", model="resource")
    template = Entity(id="tmpl-web", model="template")
    integration = Entity(id="int-github", model="integration")
    plan: list[tuple[Action, Entity, Actor]] = [
        (Action.CREATE, resource, alice),
        (Action.UPDATE, resource, alice),
        (Action.DRYRUN, resource, ci),
        (Action.APPROVE, resource, bob),
        (Action.EXECUTE, resource, ci),
        (Action.REJECT, template, bob),
        (Action.SYNC, integration, Actor.system("scheduler")),
        (Action.DISABLE, integration, alice),
        (Action.ENABLE, integration, alice),
        (Action.RETRY, resource, ci),
        (Action.DESTROY, resource, alice),
        (Action.RECREATE, resource, alice),
        (Action.DELETE, template, bob),
    ]
    ids = []
    revision = 0
    for action, entity, actor in plan:
        try:
            async with audit.action(action, entity=entity, actor=actor, tenant=tenant, request=request) as act:
                ids.append(str(act.audit_id))
                log.info("action_started", action=action.value, entity=entity.id)
                if action is Action.UPDATE:
                    act.change("replicas", 1, 3)
                if action is Action.EXECUTE:
                    result = await run_in_executor(None, _blocking_step, entity.id)
                    log.info("execution_step", step="apply", plan=result)
                if action is Action.REJECT:
                    raise DemoFailure("template failed policy check: missing owner tag")
                revision += 1
                act.revision = revision
                log.info("action_finished", revision=revision)
        except DemoFailure:
            log.warning("demo_failure_recorded", action=action.value)
    return ids


HISTORY_SOURCE = "demo-history"
"""Source of the generated history, so it is never mistaken for recorded actions."""


async def import_history(audit: AuditProducer, tenants: list[str], days: int = 14, actions: int = 400) -> list[str]:
    """Two weeks of generated history (several tenants, users, models, outcomes) so charts mean something.

    Events carry their historical times and a distinct source (`demo-history`); they go through the same
    publisher (signed when the service signs) and are projected like any other. Returns their audit ids.
    """
    rng = random.Random(7)
    users = [Actor.user(f"u-{n.lower()}", f"{n} Example") for n in ("Alice", "Bob", "Carol", "Dan", "Erin")]
    users += [Actor.service_account("sa-ci", "CI pipeline"), Actor.system("scheduler")]
    models = {"resource": 40, "template": 8, "integration": 6, "secret": 5}
    weights = {Action.UPDATE: 30, Action.SYNC: 20, Action.CREATE: 12, Action.EXECUTE: 10, Action.APPROVE: 6,
               Action.DRYRUN: 6, Action.RETRY: 4, Action.REJECT: 3, Action.DELETE: 3, Action.ENABLE: 2,
               Action.DISABLE: 2, Action.DESTROY: 1, Action.RECREATE: 1}  # fmt: skip
    now = datetime.now(UTC)
    ids = []
    for _ in range(actions):
        tenant = rng.choices(tenants, weights=[6, *[1] * (len(tenants) - 1)])[0]
        model = rng.choice(list(models))
        entity = Entity(id=f"{model[:3]}-{rng.randrange(models[model]):03d}", model=model)
        action = rng.choices(list(weights), weights=list(weights.values()))[0]
        at = now - timedelta(days=days) * rng.random() ** 1.5
        hour_of_day = 8 + rng.random() * 10  # office hours, mostly
        at = at.replace(hour=int(hour_of_day), minute=int(hour_of_day % 1 * 60))
        if at >= now:
            at = now - timedelta(minutes=rng.randrange(1, 600))
        audit_id = uuid7(int(at.timestamp() * 1000))
        key = audit_key(tenant, entity.model, entity.id)
        start = ActionEvent(
            id=audit_id, source=HISTORY_SOURCE, subject=f"{entity.model}/{entity.id}", time=at, partitionkey=key,
            data=ActionStarted(audit_id=audit_id, tenant_id=tenant, action=action, entity=entity,
                               actor=rng.choice(users), started_at=at),
        )  # fmt: skip
        failed = rng.random() < 0.08
        took = timedelta(milliseconds=rng.randrange(20, 4000))
        outcome = OutcomeEvent(
            id=uuid7(int((at + took).timestamp() * 1000)), source=HISTORY_SOURCE, subject=start.subject,
            time=at + took, partitionkey=key,
            data=ActionOutcome.model_validate({
                "audit_id": audit_id, "tenant_id": tenant, "action": action, "entity": entity,
                "status": OutcomeStatus.FAILED if failed else OutcomeStatus.SUCCEEDED,
                "error": ErrorSummary(type="PolicyViolation", message="missing owner tag") if failed else None,
                "finished_at": at + took, "duration_ms": took.total_seconds() * 1000,
            }),
        )  # fmt: skip
        for event in (start, outcome):
            await audit.import_event(event)
        ids.append(str(audit_id))
    return ids


async def show(
    api: str, audit_ids: list[str], timeout_s: float, token: str | None = None, *, public_url: str | None = None
) -> None:
    """Wait until the API serves every entry, then print where to look (`public_url`, when people reach the API
    at another address than this process does), a sample, and how to sign in."""
    shown = public_url or api
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=api, timeout=5, headers=headers) as client:
        deadline = time.monotonic() + timeout_s
        while True:
            found = 0
            for audit_id in audit_ids:
                response = await client.get(f"/v1/audit/{audit_id}")
                found += response.status_code == 200 and response.json()["entry"]["outcome"]["status"] != "in_progress"
            logs = (await client.get(f"/v1/audit/{audit_ids[4]}")).json().get("logs", []) if found else []
            if (found == len(audit_ids) and len(logs) >= 4) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        page = (await client.get("/v1/audit", params={"limit": 13})).json()
        print(f"\n{found}/{len(audit_ids)} demo actions are in the read model.\n")
        print(f"{'time':<27} {'user':<24} {'event':<9} {'entity id':<16} {'model':<12} {'outcome':<10} audit log id")
        for e in page["data"]:
            user = e["user"]["display_name"] or e["user"]["id"] or e["user"]["type"]
            print(
                f"{e['time']:<27} {user:<24} {e['event']:<9} {e['entity']['id']:<16} {e['entity']['model']:<12} "
                f"{e['outcome']['status']:<10} {e['audit_id']}"
            )
        execute_id = audit_ids[4]
        detail = (await client.get(f"/v1/audit/{execute_id}")).json()
        print(f"\nExecution logs of the execute action ({execute_id}):")
        for line in detail["logs"]:
            print(f"  {line['time']}  {line['level']:<7} {line['logger'] or '':<24} {line['message']}")
        print(f"\nWeb UI:        {shown}/  (sign in at {shown}/login)")
        if token:
            print("Read-only token for the demo tenant (paste it on the sign-in page, or send it as a bearer token):")
            print(f"  {token}")
        print(f"OpenAPI docs:  {shown}/docs")
        print(f"Audit log:     {shown}/v1/audit")
        print(f"Trace view:    {shown}/v1/traces/{detail['entry']['trace_id']}")
        if found != len(audit_ids):
            raise SystemExit(f"only {found} of {len(audit_ids)} actions reached the API in {timeout_s}s")
