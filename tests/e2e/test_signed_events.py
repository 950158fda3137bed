"""Signed events: nobody records in another service's name or for another tenant; a non-Python signer works."""

import asyncio
import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from audit_producer import Actor, AuditProducer, Entity
from audit_schemas import encode, signing
from audit_schemas.checkpoint import NoteSigner
from tests.conftest import Isolated, projector_running
from tests.factories import action_event, key_of, read_topic
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _register(isolated: Isolated, signer: NoteSigner, *args: str) -> None:
    env = {**isolated.projector_env(), "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"), "producer-key", "--verifier-key", signer.verifier_key,
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


async def _send(isolated: Isolated, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=isolated.stack.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(isolated.projector.audit_topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _openssl_signed(
    value: bytes, key: bytes, topic: str, tmp: Path
) -> tuple[NoteSigner, list[tuple[str, bytes]]]:
    """Sign with the openssl command line (no Python crypto), as a publisher in another language would."""
    pem, data = tmp / "key.pem", tmp / "signed.bin"
    gen = await asyncio.create_subprocess_exec("openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem))
    assert await gen.wait() == 0
    raw = await asyncio.create_subprocess_exec(
        "openssl", "pkey", "-in", str(pem), "-outform", "DER", stdout=asyncio.subprocess.PIPE
    )
    der, _ = await raw.communicate()
    seed = der[-32:]  # PKCS#8 DER of an Ed25519 key ends with the 32-byte seed
    await asyncio.to_thread(data.write_bytes, signing.signed_bytes(topic, key, value))
    sign = await asyncio.create_subprocess_exec(
        "openssl", "pkeyutl", "-sign", "-inkey", str(pem), "-rawin", "-in", str(data), stdout=asyncio.subprocess.PIPE
    )
    signature, _ = await sign.communicate()
    assert len(signature) == 64
    signer = NoteSigner.from_seed("ruby-service", seed)  # only to derive the verifier key the operator registers
    kid = signing.key_id(signer.name, signer.public_key)
    return signer, [(signing.KEY_ID_HEADER, kid.encode()), (signing.SIGNATURE_HEADER, base64.b64encode(signature))]


async def test_only_registered_keys_write_for_their_sources_and_tenants(isolated: Isolated, tmp_path: Path) -> None:
    good, good_key = NoteSigner.generate("resource-service")
    await _register(isolated, good, "--source", "resource-service", "--tenant", "acme")
    settings = isolated.projector.model_copy(update={"require_signatures": True, "probe_interval_s": 0.3})
    producer_settings = isolated.producer.model_copy(
        update={"spool_dir": tmp_path / "spool", "signing_key": SecretStr(good_key)}
    )
    topic = isolated.projector.audit_topic
    async with projector_running(settings), AuditProducer("resource-service", producer_settings) as audit:
        async with audit.action(
            "create", entity=Entity(id="signed-1", model="resource"), actor=Actor.user("u"), tenant="acme"
        ) as ok:
            pass
        # The same valid key, for a tenant it may not write for.
        async with audit.action(
            "create", entity=Entity(id="other", model="resource"), actor=Actor.user("u"), tenant="globex"
        ):
            pass
        unsigned = action_event("unsigned")
        await _send(isolated, encode(unsigned), key_of(unsigned), [])
        forged = action_event("forged")
        imposter, _ = NoteSigner.generate("resource-service")
        await _send(
            isolated,
            encode(forged),
            key_of(forged),
            signing.EventSigner(imposter).headers(topic, key_of(forged), encode(forged)),
        )
        tampered = action_event("tampered")
        headers = signing.EventSigner(good).headers(topic, key_of(tampered), encode(tampered))
        altered = json.loads(encode(tampered))
        altered["data"]["actor"]["id"] = "mallory"
        await _send(isolated, json.dumps(altered).encode(), key_of(tampered), headers)
        other_source = action_event("other-source").model_copy(update={"source": "billing-service"})
        await _send(
            isolated,
            encode(other_source),
            key_of(other_source),
            signing.EventSigner(good).headers(topic, key_of(other_source), encode(other_source)),
        )
        external = action_event("from-openssl").model_copy(update={"source": "ruby-service"})
        ruby, external_headers = await _openssl_signed(encode(external), key_of(external), topic, tmp_path)
        await _register(isolated, ruby, "--source", "ruby-service")
        await asyncio.sleep(1)  # the registry is reloaded with the next probe
        await _send(isolated, encode(external), key_of(external), external_headers)

        async def settled() -> tuple[set[str], dict[str, str]] | None:
            async with isolated.owner() as conn:
                entities = {r[0] for r in await conn.fetch("SELECT entity_id FROM audit_entries")}
                letters = await conn.fetch("SELECT reason, record_value FROM dead_letters")
            reasons = {json.loads(r["record_value"])["data"]["entity"]["id"]: r["reason"] for r in letters}
            return (entities, reasons) if len(letters) >= 6 and "from-openssl" in entities else None

        entities, reasons = await eventually(settled, within=45)
    assert entities == {"signed-1", "from-openssl"}
    assert reasons == {
        "other": "tenant_not_allowed",
        "unsigned": "unsigned",
        "forged": "unknown_signing_key",
        "tampered": "bad_signature",
        "other-source": "source_not_allowed",
    }
    assert ok.audit_id


async def test_redrive_republishes_under_its_own_identity_keeping_the_original_signature(
    isolated: Isolated, tmp_path: Path
) -> None:
    service, _ = NoteSigner.generate("resource-service")
    redrive, redrive_key = NoteSigner.generate("audit-redrive")
    await _register(isolated, service, "--source", "resource-service")
    await _register(isolated, redrive, "--source", "resource-service")
    topic = isolated.projector.audit_topic
    settings = isolated.projector.model_copy(update={"require_signatures": True, "probe_interval_s": 0.3})
    event = action_event("broken-then-fixed").model_copy(update={"source": "resource-service"})
    broken = json.loads(encode(event))
    broken["data"]["action"] = "updte"
    broken_bytes = json.dumps(broken).encode()
    async with projector_running(settings):
        # A typo the service signed: refused (unknown action); an operator fixes and redrives it.
        await _send(
            isolated,
            broken_bytes,
            key_of(event),
            signing.EventSigner(service).headers(topic, key_of(event), broken_bytes),
        )

        async def refused() -> Any:
            async with isolated.owner() as conn:
                return await conn.fetchrow("SELECT kafka_partition, kafka_offset FROM dead_letters")

        letter = await eventually(refused, within=30)
        fixed = tmp_path / "fixed.json"
        await asyncio.to_thread(fixed.write_bytes, encode(event))
        env = {
            **isolated.projector_env(),
            "AUDIT_PROJECTOR_REDRIVE_KEY": redrive_key,
            "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
        }
        redrive_cli = (
            str(Path(sys.executable).parent / "audit-projector"), "redrive", "--topic", topic,
            "--partition", str(letter[0]), "--offset", str(letter[1]), "--value-file", str(fixed),
        )  # fmt: skip
        # A malformed redrive key is refused before anything is touched, with a message rather than a traceback.
        bad = await asyncio.create_subprocess_exec(
            *redrive_cli, env={**env, "AUDIT_PROJECTOR_REDRIVE_KEY": "PRIVATE+KEY+nonsense"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(bad.communicate(), 60)
        assert bad.returncode == 1, out.decode()
        assert "cannot load the redrive signing key" in out.decode()
        assert "Traceback" not in out.decode()
        proc = await asyncio.create_subprocess_exec(
            *redrive_cli, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()

        async def projected() -> bool:
            async with isolated.owner() as conn:
                return bool(await conn.fetchval("SELECT count(*) FROM audit_entries") == 1)

        await eventually(projected, within=30)
    records = await read_topic(isolated.stack.bootstrap, topic)
    redriven = [dict(r.headers) for r in records if "audit.redrive.source" in dict(r.headers)]
    assert len(redriven) == 1
    assert redriven[0][signing.KEY_ID_HEADER].decode() == signing.key_id(redrive.name, redrive.public_key)
    assert redriven[0]["audit.redrive.original-key-id"].decode() == signing.key_id(service.name, service.public_key)
    assert "audit.redrive.original-signature" in redriven[0]


async def test_a_key_rotation_window_accepts_both_keys_then_only_the_new_one(
    isolated: Isolated, tmp_path: Path
) -> None:
    old, old_key = NoteSigner.generate("resource-service")
    new, new_key = NoteSigner.generate("resource-service")
    later, later_key = NoteSigner.generate("resource-service")
    now = datetime.now(UTC)
    retire_at = now + timedelta(seconds=10)  # room for three CLI registrations and two actions on a busy machine
    # The window: the new key is valid from now, the old one until `retire_at`; both are registered at once.
    await _register(isolated, old, "--source", "resource-service", "--valid-until", retire_at.isoformat())
    await _register(isolated, new, "--source", "resource-service")
    # A key announced for the future is not valid yet.
    await _register(
        isolated, later, "--source", "resource-service", "--valid-from", (now + timedelta(days=1)).isoformat()
    )
    settings = isolated.projector.model_copy(update={"require_signatures": True, "probe_interval_s": 0.3})

    async def act(key: str, entity: str) -> None:
        producer = isolated.producer.model_copy(update={"spool_dir": tmp_path / entity, "signing_key": SecretStr(key)})
        async with (
            AuditProducer("resource-service", producer) as audit,
            audit.action("update", entity=Entity(id=entity, model="resource"), actor=Actor.user("u"), tenant="acme"),
        ):
            pass

    async with projector_running(settings):
        await act(old_key, "old-in-window")
        await act(new_key, "new-in-window")
        assert datetime.now(UTC) < retire_at, "the in-window actions took longer than the window"
        await asyncio.sleep(max(0.0, (retire_at - datetime.now(UTC)).total_seconds()) + 0.5)
        await act(old_key, "old-after-window")
        await act(new_key, "new-after-window")
        await act(later_key, "too-early")

        async def settled() -> tuple[set[str], dict[str, str]] | None:
            async with isolated.owner() as conn:
                entities = {r[0] for r in await conn.fetch("SELECT entity_id FROM audit_entries")}
                letters = await conn.fetch("SELECT reason, record_value FROM dead_letters")
            reasons = {json.loads(r["record_value"])["data"]["entity"]["id"]: r["reason"] for r in letters}
            return (entities, reasons) if len(letters) >= 4 and "new-after-window" in entities else None

        entities, reasons = await eventually(settled, within=45)
    assert entities == {"old-in-window", "new-in-window", "new-after-window"}
    assert reasons == {"old-after-window": "key_not_valid", "too-early": "key_not_valid"}
