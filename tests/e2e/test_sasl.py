"""The secure profile: SASL_SSL with SCRAM, the stack's CA and per-principal ACLs, against the real broker.

Each service authenticates as its own principal; a wrong password, an untrusted CA or the anonymous plaintext
listener gets nothing; every principal is refused what its role does not need; signatures are forced on.
"""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

from audit_producer import Actor, AuditProducer, Entity, PublishError, add_trace_context
from audit_projector.errors import ProjectorError
from audit_projector.replay import replay
from audit_projector.service import serve
from audit_query import selfaudit
from audit_schemas import Action, encode, signing
from audit_schemas.checkpoint import NoteSigner
from audit_schemas.kafka_security import KafkaSecurity
from tests.conftest import SecureIsolated, SecureStack, projector_running, query_client
from tests.factories import action_event, key_of
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

AUTH_DENIED = 29  # TOPIC_AUTHORIZATION_FAILED, as admin responses carry it


async def _register(env: dict[str, str], signer: NoteSigner, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"), "producer-key", "--verifier-key", signer.verifier_key,
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


async def _write(
    bootstrap: str,
    security: KafkaSecurity,
    topic: str,
    value: bytes,
    key: bytes = b"k",
    *,
    idempotent: bool = False,
    **kw: Any,
) -> None:
    """Publish one record with acks=all (headers or partition in `kw`)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        request_timeout_ms=10_000,
        enable_idempotence=idempotent,
        **security.client_options(),
    )
    try:
        await producer.start()
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=key, **kw), 20)
    finally:
        await producer.stop()


async def _read(bootstrap: str, security: KafkaSecurity, topic: str, group: str | None = None) -> int:
    """Records read from partition 0 (assigned) or via `group` (subscribed)."""
    consumer = AIOKafkaConsumer(
        *([topic] if group else []),
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        **security.client_options(),
    )
    try:
        await consumer.start()  # a group the principal may not read is refused here already
        if group is None:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
        batches = await asyncio.wait_for(consumer.getmany(timeout_ms=2000), 20)
        return sum(len(b) for b in batches.values())
    finally:
        await consumer.stop()


async def _admin(bootstrap: str, security: KafkaSecurity, action: str, topic: str) -> int:
    """The error code of an admin request (0: done): create a topic, alter a config, delete records or a topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **security.client_options())
    try:
        await admin.start()
        if action == "create_topic":
            created = await admin.create_topics([NewTopic(f"{topic}.new", 1, 1)])
            return int(created.topic_errors[0][1])
        if action == "alter_config":
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "1000"})
            altered = await admin.alter_configs([resource])
            return int(altered[0].resources[0][0])
        if action == "delete_records":
            try:
                await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(1)})
            except TopicAuthorizationFailedError:
                return AUTH_DENIED
            return 0
        deleted = await admin.delete_topics([topic])
        return int(deleted.topic_error_codes[0][1])
    finally:
        await admin.close()


async def test_signed_events_project_through_sasl_and_the_rest_is_dead_lettered(
    secure_isolated: SecureIsolated, tmp_path: Path
) -> None:
    s = secure_isolated
    billing, billing_key = NoteSigner.generate("billing-service")
    query_signer = s.query.event_signer()
    assert query_signer is not None
    assert s.query.signing_key is not None
    env = s.projector_env()
    await _register(env, billing, "--source", "billing-service", "--tenant", "acme")
    await _register(env, NoteSigner.parse(s.query.signing_key.get_secret_value()), "--source", "audit-query")
    # SASL is on and nobody asked for signatures: they are required all the same.
    assert s.projector.require_signatures is None
    assert s.projector.signatures_required
    topic = s.projector.audit_topic
    emitter = s.secure.security("billing")
    async with (
        projector_running(s.projector),
        AuditProducer("billing-service", s.producer("billing", billing_key, tmp_path / "spool")) as audit,
    ):
        async with audit.action(
            "create", entity=Entity(id="invoice-1", model="invoice"), actor=Actor.user("u"), tenant="acme"
        ) as ok:
            log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
            log.info("charging card", card="4242")
        async with audit.action(
            "create", entity=Entity(id="other-tenant", model="invoice"), actor=Actor.user("u"), tenant="globex"
        ):
            pass
        # An authenticated emitter that does not sign, and one that signs with a key nobody registered.
        unsigned = action_event("unsigned").model_copy(update={"source": "billing-service"})
        await _write(s.secure.bootstrap, emitter, topic, encode(unsigned), key_of(unsigned))
        forged = action_event("forged").model_copy(update={"source": "billing-service"})
        imposter, _ = NoteSigner.generate("billing-service")
        headers = signing.EventSigner(imposter).headers(topic, key_of(forged), encode(forged))
        await _write(s.secure.bootstrap, emitter, topic, encode(forged), key_of(forged), headers=headers)
        # The query API records its own action as itself (principal audit-query, key audit-query).
        start, outcome = selfaudit.events(
            Action.CREATE, "api_token", "tok-1", Actor.user("admin"), s.query.self_audit_tenant
        )
        await selfaudit.record(s.query, start, outcome)

        async def settled() -> tuple[set[str], dict[str, str]] | None:
            # The execution-log line travels its own topic and pipeline (whose group may join later): waited for too.
            async with s.owner() as conn:
                entities = {r[0] for r in await conn.fetch("SELECT entity_id FROM audit_entries")}
                letters = await conn.fetch("SELECT reason, record_value FROM dead_letters")
                logged = await conn.fetchval("SELECT count(*) FROM execution_logs WHERE trace_id = $1", ok.audit_id)
            reasons = {json.loads(r["record_value"])["data"]["entity"]["id"]: r["reason"] for r in letters}
            done = len(letters) >= 3 and {"invoice-1", "tok-1"} <= entities and logged >= 1
            return (entities, reasons) if done else None

        entities, reasons = await eventually(settled, within=60)
        assert entities == {"invoice-1", "tok-1"}
        assert reasons == {
            "other-tenant": "tenant_not_allowed",
            "unsigned": "unsigned",
            "forged": "unknown_signing_key",
        }
        async with s.owner() as conn:
            logged = await conn.fetchval("SELECT count(*) FROM execution_logs WHERE trace_id = $1", ok.audit_id)
        assert logged == 1

        # The query API reads end offsets as audit-query (lag) and reports ready.
        async with query_client(s.query) as client:
            ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ok", ready
        assert len(ready["checks"]["projector_lag"]["partitions"]) == 12, ready

    # Replay, as its own principal in its own group, rebuilds the same entries from offset 0.
    rebuilt = await replay(
        s.projector_as("audit-replay", db_schema=f"{s.name}_r", group_id=f"audit-replay-{s.name}"),
        s.secure.db.owner_dsn,
        timeout_s=60,
    )
    assert rebuilt.projected == 5  # two actions (start and outcome) and one log line
    assert rebuilt.dead_lettered == 4  # the other tenant's start and outcome, unsigned, forged


async def test_redrive_publishes_as_its_own_principal_and_must_sign(
    secure_isolated: SecureIsolated, tmp_path: Path
) -> None:
    s = secure_isolated
    billing, _ = NoteSigner.generate("billing-service")
    redrive, redrive_key = NoteSigner.generate("audit-redrive")
    env = s.projector_env()
    await _register(env, billing, "--source", "billing-service")
    await _register(env, redrive, "--source", "billing-service")
    topic = s.projector.audit_topic
    event = action_event("typo").model_copy(update={"source": "billing-service"})
    broken = json.loads(encode(event))
    broken["data"]["action"] = "updte"
    value = json.dumps(broken).encode()
    async with projector_running(s.projector):
        headers = signing.EventSigner(billing).headers(topic, key_of(event), value)
        await _write(s.secure.bootstrap, s.secure.security("billing"), topic, value, key_of(event), headers=headers)

        async def refused() -> Any:
            async with s.owner() as conn:
                return await conn.fetchrow("SELECT kafka_partition, kafka_offset FROM dead_letters")

        letter = await eventually(refused, within=30)
        fixed = tmp_path / "fixed.json"
        await asyncio.to_thread(fixed.write_bytes, encode(event))
        cli = (
            str(Path(sys.executable).parent / "audit-projector"), "redrive", "--topic", topic,
            "--partition", str(letter[0]), "--offset", str(letter[1]), "--value-file", str(fixed),
        )  # fmt: skip

        async def run(extra: dict[str, str]) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                *cli, env={**s.projector_env("audit-redrive"), **extra},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode()

        # Without a redrive key nothing is published: under SASL an unsigned redrive would only be refused.
        code, out = await run({})
        assert code == 1, out
        assert "must be signed" in out
        code, out = await run({"AUDIT_PROJECTOR_REDRIVE_KEY": redrive_key})
        assert code == 0, out

        async def projected() -> bool:
            async with s.owner() as conn:
                return bool(await conn.fetchval("SELECT count(*) FROM audit_entries") == 1)

        await eventually(projected, within=30)


@pytest.mark.parametrize(
    ("principal", "action", "kind"),
    [
        # Emitting services write the audit and log topics and nothing else.
        ("billing", "read", "audit"),
        ("billing", "write", "dead_letter"),
        ("billing", "write", "checkpoint"),
        ("inventory", "read", "logs"),
        # The projector (and replay) read and write their own topics, never the audit log itself.
        ("audit-projector", "write", "audit"),
        ("audit-projector", "group", "audit"),
        ("audit-replay", "write", "logs"),
        ("audit-replay", "group", "audit"),
        # Redrive writes the source topics only; the query API may read nothing and write only its own audit.
        ("audit-redrive", "read", "audit"),
        ("audit-redrive", "write", "dead_letter"),
        ("audit-query", "read", "audit"),
        ("audit-query", "write", "logs"),
    ],
)
async def test_each_principal_is_refused_what_its_role_does_not_need(
    secure_isolated: SecureIsolated, principal: str, action: str, kind: str
) -> None:
    s = secure_isolated
    topic = {
        "audit": s.projector.audit_topic,
        "logs": s.projector.execution_log_topic,
        "dead_letter": s.projector.dead_letter_topic,
        "checkpoint": s.projector.checkpoint_topic,
    }[kind]
    security = s.secure.security(principal)
    # The same operation by the principal whose role it is succeeds, so the refusal below is the ACL's doing.
    owner = {
        "read": "audit-projector",
        "write": "audit-projector" if kind in ("dead_letter", "checkpoint") else "billing",
    }
    if action in owner:
        await _write(s.secure.bootstrap, s.secure.security(owner["write"]), topic, b"x", partition=0)
    if action == "read":
        assert await _read(s.secure.bootstrap, s.secure.security(owner["read"]), topic) == 1
        with pytest.raises(TopicAuthorizationFailedError):
            await _read(s.secure.bootstrap, security, topic)
    elif action == "write":
        with pytest.raises(TopicAuthorizationFailedError):
            await _write(s.secure.bootstrap, security, topic, b"not yours")
    else:  # a consumer group outside the principal's own prefix
        other = "audit-replay-x" if principal == "audit-projector" else f"audit-projector.{s.name}"
        with pytest.raises(GroupAuthorizationFailedError):
            await _read(s.secure.bootstrap, security, topic, group=other)


@pytest.mark.parametrize("principal", ["billing", "audit-projector", "audit-query", "audit-redrive", "audit-replay"])
async def test_only_admin_creates_topics_alters_configs_or_deletes_records(
    secure_isolated: SecureIsolated, principal: str
) -> None:
    s = secure_isolated
    topic = s.projector.audit_topic
    security = s.secure.security(principal)
    for action in ("create_topic", "alter_config", "delete_records", "delete_topic"):
        assert await _admin(s.secure.bootstrap, security, action, topic) == AUTH_DENIED, action
    # Admin may (a harmless config change, to show the request itself is well-formed).
    admin = AIOKafkaAdminClient(bootstrap_servers=s.secure.bootstrap, **s.secure.security("admin").client_options())
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={**_infinite(), "min.insync.replicas": "1"})
        altered = await admin.alter_configs([resource])
    finally:
        await admin.close()
    assert altered[0].resources[0][0] == 0


def _infinite() -> dict[str, str]:
    return {
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "cleanup.policy": "delete",
        "message.timestamp.type": "LogAppendTime",
    }


async def test_wrong_password_untrusted_ca_and_anonymous_plaintext_are_refused(
    secure_stack: SecureStack, secure_isolated: SecureIsolated, tmp_path: Path
) -> None:
    s = secure_isolated
    _, key = NoteSigner.generate("billing-service")
    good = s.producer("billing", key, tmp_path / "spool")
    wrong = good.model_copy(update={"kafka": secure_stack.security("billing", password="not-the-password")})
    with pytest.raises(PublishError, match="refused the SASL credentials of 'billing'"):
        async with AuditProducer("billing-service", wrong.model_copy(update={"publish_timeout_s": 3})):
            pass
    # A CA that did not sign the broker's certificate (a fresh one, as an attacker's or a stale bundle would be).
    other_ca = tmp_path / "other-ca.crt"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", "/CN=not the stack CA", "-keyout", str(tmp_path / "other.key"), "-out", str(other_ca),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await openssl.wait() == 0
    untrusted = good.model_copy(update={"kafka": secure_stack.security("billing", ca_file=other_ca)})
    with pytest.raises(PublishError, match="certificate is not trusted"):
        async with AuditProducer("billing-service", untrusted.model_copy(update={"publish_timeout_s": 3})):
            pass
    # The plaintext listener beside SASL_SSL: anonymous, granted nothing.
    with pytest.raises((TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
        # (idempotent: the producer id is the first thing it asks for, and is refused at once)
        await _write(secure_stack.plaintext, KafkaSecurity(), s.projector.audit_topic, b"anonymous", idempotent=True)
    anonymous = AIOKafkaConsumer(bootstrap_servers=secure_stack.plaintext)
    await anonymous.start()
    try:
        visible = await asyncio.wait_for(anonymous.topics(), 20)
    finally:
        await anonymous.stop()
    assert visible == set()  # it cannot even learn that the topics exist, let alone read them
    # The projector with a wrong password stops with the cause named (not retried forever).
    bad = s.projector.model_copy(update={"kafka": secure_stack.security("audit-projector", password="nope")})
    with pytest.raises(ProjectorError, match="refused the SASL credentials of 'audit-projector'"):
        await asyncio.wait_for(serve(bad), 60)
    # And the query API reports what is wrong rather than a bare connection error.
    query = s.query.model_copy(update={"kafka": secure_stack.security("audit-query", ca_file=other_ca)})
    async with query_client(query) as client:
        ready = (await client.get("/readyz")).json()
    assert "certificate is not trusted" in json.dumps(ready), ready


async def test_a_service_principal_cannot_create_missing_topics(secure_isolated: SecureIsolated) -> None:
    s = secure_isolated
    missing = s.projector.model_copy(update={"audit_topic": f"{s.projector.audit_topic}.never-created"})
    with pytest.raises(ProjectorError, match="may not create them: an admin creates topics") as caught:
        await asyncio.wait_for(serve(missing), 60)
    assert "never-created" in str(caught.value)
