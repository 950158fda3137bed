"""Secrets never leave the process in clear: nowhere in Kafka (audit, logs, dead letters) nor in PostgreSQL."""

from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from audit_producer import Actor, AuditProducer, Entity, RequestContext, add_trace_context
from tests.conftest import Isolated, projector_running
from tests.factories import read_topic
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SECRETS = ("hunter2-SECRET", "k-123-SECRET", "tok-abc-SECRET", "pw-url-SECRET", "eyJhbGciOi-SECRET", "pw2-SECRET")


async def test_sensitive_values_appear_nowhere_after_the_producer(isolated: Isolated, tmp_path: Path) -> None:
    settings = isolated.producer.model_copy(update={"spool_dir": tmp_path, "redact_hmac_key": SecretStr("inv-key")})
    async with AuditProducer("redacting-service", settings) as audit, projector_running(isolated.projector):
        log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])

        async def leaky_action() -> None:
            async with audit.action(
                "update",
                entity=Entity(id="cfg-1", model="integration"),
                actor=Actor.user("u-1", "Ada"),
                tenant="acme",
                request=RequestContext(user_agent="curl/8 Authorization: Bearer eyJhbGciOi-SECRET"),
            ) as act:
                act.change("password", "old-one", "hunter2-SECRET")
                act.change("settings", {"url": "https://x"}, {"nested": {"api_key": "k-123-SECRET"}, "ok": True})
                log.info("connecting", token="tok-abc-SECRET", url="https://svc:pw-url-SECRET@host/x")
                log.info("calling with Authorization: Bearer eyJhbGciOi-SECRET")
                raise RuntimeError("login failed for password=pw2-SECRET")

        with pytest.raises(RuntimeError):
            await leaky_action()

        async def landed() -> bool:
            async with isolated.owner() as conn:
                outcomes = await conn.fetchval("SELECT count(*) FROM audit_outcomes")
                logs = await conn.fetchval("SELECT count(*) FROM execution_logs")
            return bool(outcomes == 1 and logs == 2)

        await eventually(landed, within=30)
    everywhere: list[str] = []
    for topic in (
        isolated.producer.audit_topic,
        isolated.producer.execution_log_topic,
        isolated.projector.dead_letter_topic,
    ):
        for record in await read_topic(isolated.stack.bootstrap, topic):
            everywhere.append((record.value or b"").decode("utf-8", "replace"))
            everywhere += [v.decode("utf-8", "replace") for _, v in record.headers]
    async with isolated.owner() as conn:
        for table in ("audit_entries", "audit_outcomes", "execution_logs", "dead_letters", "merkle_leaves"):
            everywhere += [str(dict(r)) for r in await conn.fetch(f"SELECT * FROM {table}")]
    dump = "\n".join(everywhere)
    for secret in SECRETS:
        assert secret not in dump, f"{secret} leaked"
    assert "old-one" not in dump, "both sides of a sensitive change are masked"
    assert "[REDACTED hmac-sha256:" in dump
    outcome: Any = next(v for v in everywhere if '"status":"failed"' in v)
    assert "login failed for password=[REDACTED" in outcome
