"""Lawful erasure on the realistic mix: personal fields sealed by the producer under per-subject keys reach no
topic or table in clear, read back opened through the API, and after `erase` read as erased everywhere while every
proof and both verifiers still pass; a legal hold refuses it; another tenant's subject with the same id is not
touched."""

import asyncio
import base64
import contextlib
import glob
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
import structlog
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from audit_producer import Actor, AuditProducer, Entity, KeyServiceError, RequestContext
from audit_projector.compare import compare
from audit_projector.config import Settings as ProjectorSettings
from audit_projector.replay import replay
from audit_query.config import Settings as QuerySettings
from audit_query.keystore.store import KeyStore
from audit_query.keystore.wrapping import Kek, Keks
from audit_query.main import create_app, server_config
from audit_schemas.checkpoint import NoteSigner
from audit_schemas.keyservice import KEY_REQUEST_DOMAIN, KeyGrant, KeyRequest
from audit_schemas.signing import EventSigner
from tests.conftest import Isolated, free_port, projector_cli, projector_running, query_client, query_server
from tests.e2e.test_web_ui import ARTIFACTS, _browser
from tests.history import History, record_history, shipping
from tests.keystore import KeyStoreFixture, key_store, register_producer, sealing_producer
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PERSONAL = ("u-dora", "Dora Personal", "198.51.100.23", "DoraBrowser/9.1", "dora@example.org", "dora@new.example")
"""What the sealed actions carry that must appear nowhere in clear."""


async def _personal_actions(audit: AuditProducer) -> dict[str, str]:
    """Dora (acme) changes her own e-mail and logs it; a failed action of hers; Dora of globex acts too."""
    dora = Actor.user("u-dora", "Dora Personal")
    request = RequestContext(request_id="req-dora", client_ip="198.51.100.23", user_agent="DoraBrowser/9.1")
    log = structlog.get_logger("profile_service")
    async with audit.action(
        "update", entity=Entity(id="u-dora", model="user"), actor=dora, tenant="acme", request=request
    ) as act:
        act.change("email", "dora@example.org", "dora@new.example")
        act.change("theme", "light", "dark")
        log.info("e-mail changed", email="dora@new.example", attempt=1)
        update = act.trace_id
    with pytest.raises(RuntimeError):
        async with audit.action("delete", entity=Entity(id="res-9", model="resource"), actor=dora, tenant="acme"):
            raise RuntimeError("not allowed")
    other = Actor.user("u-dora", "Dora of Globex")
    async with audit.action("execute", entity=Entity(id="res-1", model="resource"), actor=other, tenant="globex") as g:
        globex = g.trace_id
    return {"update": update, "globex": globex}


def _raw_topic(bootstrap: str, topic: str) -> bytes:
    """Every record of `topic` (key, value, headers) as kcat prints it, or read raw when kcat is not installed."""
    if shutil.which("kcat"):
        out = subprocess.run(
            ["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-f", "%k\t%s\t%h\n"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return out.stdout
    return asyncio.run(_consume_raw(bootstrap, topic))


async def _consume_raw(bootstrap: str, topic: str) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = b""
        for _ in range(1000):
            positions = [await consumer.position(p) for p in parts]
            if all(at >= ends[p] for at, p in zip(positions, parts, strict=True)):
                break
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    out += (r.key or b"") + b"\t" + (r.value or b"") + repr(r.headers).encode() + b"\n"
        return out
    finally:
        await consumer.stop()


async def _audit_schemas(*args: str) -> tuple[int, str]:
    """The auditor's offline tool (no database, no service)."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-schemas"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def _around(haystack: Any, needle: Any, width: int = 300) -> Any:
    at = haystack.find(needle)
    return haystack[max(0, at - width) : at + width]


def _pg_dump(admin_dsn: str, *schemas: str) -> str:
    binary = shutil.which("pg_dump") or sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    args = [binary, "--data-only", *(f"--schema={s}" for s in schemas), admin_dsn]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout


@dataclass(frozen=True)
class _Sealed:
    """A test's sealing stack: its key store, the query API serving it, a client, and a producer sealing through it."""

    keys: KeyStoreFixture
    query: QuerySettings
    base: str
    admin: str
    api: httpx.AsyncClient
    audit: AuditProducer
    admin_dsn: str
    """The stack's superuser (dumps and restores)."""


@contextlib.asynccontextmanager
async def _sealing(
    isolated: Isolated,
    tmp_path: Path,
    scopes: tuple[str, ...] = ("audit:read", "audit:admin"),
    projector: ProjectorSettings | None = None,
) -> AsyncIterator[_Sealed]:
    """A key store of the test's own, the query API serving it, a producer (`profile-service`, its key registered)
    sealing through it, and a projector running; skipped without the stack's superuser."""
    stack = isolated.stack
    if stack.admin_dsn is None:
        pytest.skip("needs the stack's superuser to create the test's key-store schema")
    async with key_store(stack.admin_dsn, stack.query_dsn, isolated.name) as keys:
        query = keys.query(isolated.query)
        async with query_server(query) as base:
            signing_key = await register_producer(stack.owner_dsn, query.control_schema, "profile-service", None)
            settings = sealing_producer(isolated.producer, signing_key, base, tmp_path / "spool")
            admin = await isolated.token(scopes)
            async with (
                httpx.AsyncClient(base_url=base, timeout=15, headers={"authorization": f"Bearer {admin}"}) as api,
                AuditProducer("profile-service", settings) as audit,
                projector_running(projector or isolated.projector),
            ):
                yield _Sealed(keys, query, base, admin, api, audit, stack.admin_dsn)


async def _found(api: httpx.AsyncClient, **params: str) -> int:
    answer = await api.get("/v1/audit", params={**params, "limit": "500"})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["data"])


async def _entry(api: httpx.AsyncClient, trace_id: str) -> dict[str, Any]:
    answer = await api.get(f"/v1/traces/{trace_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_sealed_personal_data_is_erased_and_every_proof_still_holds(isolated: Isolated, tmp_path: Path) -> None:
    signer, checkpoint_key = NoteSigner.generate("audit-trail")
    projecting = isolated.projector.model_copy(
        update={"checkpoint_key": SecretStr(checkpoint_key), "checkpoint_every_s": 0.5, "probe_interval_s": 0.2}
    )
    async with _sealing(isolated, tmp_path, ("audit:read", "audit:export", "audit:admin"), projecting) as s:
        api, audit, base, keys, query = s.api, s.audit, s.base, s.keys, s.query
        acme_reader = await isolated.token(("audit:read",), ("acme",))
        stack = isolated.stack
        history: History = await record_history(audit, stack.bootstrap)
        with shipping(audit):
            ids = await _personal_actions(audit)

        async def settled() -> bool | None:
            answer = await api.get(f"/v1/traces/{ids['update']}")
            if answer.status_code != 200:
                return None
            body = answer.json()
            done = body["entry"]["outcome"]["status"] == "succeeded" and len(body["logs"]) >= 1
            async with isolated.owner() as conn:
                n = await conn.fetchval("SELECT count(DISTINCT audit_id) FROM audit_entries")
            return (done and n >= len(history.audit_ids) + 3) or None

        await eventually(settled, within=60)

        # Nothing personal in clear: not in a topic (dumped as kcat prints it), not in a table.
        raw = b"".join(_raw_topic(stack.bootstrap, t) for t in isolated.projector.topics)
        dump = _pg_dump(s.admin_dsn, isolated.name, query.control_schema, keys.schema)
        for value in PERSONAL:
            assert value.encode() not in raw, f"{value!r} in clear in Kafka: {_around(raw, value.encode())!r}"
            assert value not in dump, f"{value!r} in clear in PostgreSQL: {_around(dump, value)!r}"
        # The demo's own actions are sealed too: their people appear only as pseudonyms (the history it
        # imports is published as given, as an import is).
        async with isolated.owner() as conn:
            people = await conn.fetch(
                "SELECT actor_id, sealed IS NOT NULL AS sealed FROM audit_entries"
                " WHERE audit_id = ANY($1::uuid[]) AND actor_type = 'user'",
                list(history.demo_ids),
            )
        assert people
        assert all(r["actor_id"].startswith("ps1_") for r in people)
        assert all(r["sealed"] for r in people)

        # The API opens them for a caller who may see the tenant.
        body = await _entry(api, ids["update"])
        entry = body["entry"]
        assert entry["user"] == {"type": "user", "id": "u-dora", "display_name": "Dora Personal"}
        assert entry["entity"] == {"id": "u-dora", "model": "user"}
        assert entry["request"]["client_ip"] == "198.51.100.23"
        assert entry["request"]["user_agent"] == "DoraBrowser/9.1"
        changes = entry["outcome"]["changes"]
        assert changes["email"] == {"before": "dora@example.org", "after": "dora@new.example"}
        assert changes["theme"] == {"before": "light", "after": "dark"}  # not personal: in clear
        assert [line["fields"]["email"] for line in body["logs"]] == ["dora@new.example"]
        page = (await api.get("/v1/audit", params={"tenant": "acme", "limit": 500})).json()
        assert any(e["user"]["id"] == "u-dora" for e in page["data"])
        assert all("sealed" not in e for e in page["data"])
        # Filters find a person by id through the pseudonym (the id itself is nowhere in clear).
        assert await _found(api, tenant="acme", user_id="u-dora") == 2
        assert await _found(api, q="user:u-dora") == 3  # both tenants' Doras
        assert await _found(api, model="user", entity_id="u-dora") == 1
        async with httpx.AsyncClient(
            base_url=base, timeout=15, headers={"authorization": f"Bearer {acme_reader}"}
        ) as reader:
            assert await _found(reader, q="user:u-dora") == 2  # only acme's, for an acme reader
            refused = await reader.post("/v1/subjects/erase", json={"tenant": "acme", "subject": "u-dora"})
            assert refused.status_code == 403  # erasure is for administrators

        async def proof() -> dict[str, Any] | None:
            answer = await api.get(f"/v1/audit/{ids['update']}/proof")
            return answer.json() if answer.status_code == 200 else None

        before = await eventually(proof, within=30)

        # A legal hold refuses the erasure, with its reason.
        held = await api.put(
            "/v1/subjects/hold", json={"tenant": "acme", "subject": "u-dora", "reason": "case 2026-17"}
        )
        assert held.status_code == 200, held.text
        refused = await api.post("/v1/subjects/erase", json={"tenant": "acme", "subject": "u-dora"})
        assert refused.status_code == 409
        assert "case 2026-17" in refused.json()["detail"]
        assert (await _entry(api, ids["update"]))["entry"]["user"]["id"] == "u-dora"
        released = await api.request("DELETE", "/v1/subjects/hold", params={"tenant": "acme", "subject": "u-dora"})
        assert released.status_code == 200

        # Erased: Dora of acme reads as erased everywhere; Dora of globex is untouched.
        erased = await api.post("/v1/subjects/erase", json={"tenant": "acme", "subject": "u-dora"})
        assert erased.status_code == 200, erased.text
        report = erased.json()
        assert report["entries"] == 2
        assert report["key_generations_destroyed"] == [1]
        assert "u-dora" not in erased.text
        body = await _entry(api, ids["update"])
        entry = body["entry"]
        gone = {"$erased": True}
        assert entry["user"] == {"type": "user", "id": gone, "display_name": gone}
        assert entry["entity"]["id"] == gone
        assert entry["request"] == {"request_id": "req-dora", "client_ip": gone, "user_agent": gone}
        assert entry["outcome"]["changes"]["email"] == {"before": gone, "after": gone}
        assert entry["outcome"]["changes"]["theme"] == {"before": "light", "after": "dark"}
        assert body["logs"][0]["fields"]["email"] == gone
        assert body["logs"][0]["fields"]["attempt"] == 1
        # The id no longer finds the erased person's entries; globex's Dora is still found.
        assert await _found(api, tenant="acme", user_id="u-dora") == 0
        assert await _found(api, q="user:u-dora") == 1
        other = (await _entry(api, ids["globex"]))["entry"]
        assert other["user"] == {"type": "user", "id": "u-dora", "display_name": "Dora of Globex"}
        export = await api.get("/v1/audit/export", params={"format": "csv", "tenant": "acme"})
        assert export.status_code == 200
        assert "erased" in export.text
        assert "Dora Personal" not in export.text

        # The erasure is itself an audit action naming the subject by its pseudonym only.
        async def recorded() -> dict[str, Any] | None:
            found = await api.get("/v1/audit", params={"tenant": "acme", "model": "data_subject", "event": "delete"})
            rows = found.json()["data"]
            return rows[0] if rows and rows[0]["outcome"]["status"] == "succeeded" else None

        erasure = await eventually(recorded, within=30)
        assert erasure["entity"]["id"] == report["pseudonym"]

        # Rows, leaves and checkpoints are untouched: the entry's proof is the same leaf and still verifies
        # offline, and both verifiers pass.
        after = await proof()
        assert after is not None
        assert after["leaf_data"] == before["leaf_data"]
        proof_file = tmp_path / "proof.json"
        await asyncio.to_thread(proof_file.write_text, json.dumps(after))
        code, out = await _audit_schemas("verify-inclusion", str(proof_file), "--key", signer.verifier_key)
        assert code == 0, out
        code, out = await projector_cli(isolated, "verify", "--integrity", "--key", signer.verifier_key)
        assert code == 0, out
        code, out = await projector_cli(isolated, "verify", "--read-model")
        assert code == 0, out


def _signed(signing_key: str, body: bytes) -> dict[str, str]:
    headers = EventSigner.parse(signing_key).headers(KEY_REQUEST_DOMAIN, None, body)
    return {name: value.decode() for name, value in headers} | {"content-type": "application/json"}


def _request(tenant: str, *subjects: str, age_s: float = 0.0) -> bytes:
    issued = datetime.now(UTC) - timedelta(seconds=age_s)
    return KeyRequest(tenant=tenant, subjects=subjects, issued_at=issued, request_id=uuid4()).model_dump_json().encode()


async def test_the_key_service_answers_only_fresh_requests_signed_for_the_tenant(isolated: Isolated) -> None:
    stack = isolated.stack
    if stack.admin_dsn is None:
        pytest.skip("needs the stack's superuser to create the test's key-store schema")
    async with key_store(stack.admin_dsn, stack.query_dsn, isolated.name) as keys:
        query = keys.query(isolated.query)
        mine = await register_producer(stack.owner_dsn, query.control_schema, "hr-service", ["acme"])
        stranger = NoteSigner.generate("hr-service")[1]
        async with query_client(query) as api:
            body = _request("acme", "u-1", "u-2")
            granted = await api.post("/v1/subject-keys", content=body, headers=_signed(mine, body))
            assert granted.status_code == 200, granted.text
            grant = KeyGrant.model_validate_json(granted.content)
            assert [g.subject for g in grant.keys] == ["u-1", "u-2"]
            assert grant.keys[0].pseudonym != grant.keys[1].pseudonym
            again = _request("acme", "u-1")
            regrant = KeyGrant.model_validate_json(
                (await api.post("/v1/subject-keys", content=again, headers=_signed(mine, again))).content
            )
            assert regrant.keys[0] == grant.keys[0]  # one key per subject, until it is erased

            refusals: dict[str, tuple[bytes, str | None, int]] = {
                "unsigned": (body, None, 401),
                "replayed": (body, mine, 401),
                "unregistered key": (_request("acme", "u-1"), stranger, 401),
                "another tenant": (_request("globex", "u-1"), mine, 403),
                "stale": (_request("acme", "u-1", age_s=600), mine, 401),
                "not a request": (b'{"tenant": "acme"}', mine, 400),
            }
            for why, (payload, key, status) in refusals.items():
                headers = {"content-type": "application/json"} if key is None else _signed(key, payload)
                answer = await api.post("/v1/subject-keys", content=payload, headers=headers)
                assert answer.status_code == status, (why, answer.text)
                assert answer.json()["detail"], why
            tampered = _signed(mine, body)
            answer = await api.post("/v1/subject-keys", content=body.replace(b"u-2", b"u-3"), headers=tampered)
            assert answer.status_code == 401

        # KEK rotation: everything is re-wrapped under the new KEK (events untouched), and the same keys come back
        # with the old KEK gone.
        old, new = Kek.parse(keys.kek), Kek.generate()
        rotating = await KeyStore.open(keys.url, keys.schema, Keks(new, old))
        try:
            assert await rotating.rewrap() == 3  # the tenant secret and the keys of u-1 and u-2
            assert await rotating.rewrap() == 0
        finally:
            await rotating.close()
        rotated = await KeyStore.open(keys.url, keys.schema, Keks(new))
        try:
            again_keys = await rotated.subject_keys("acme", ["u-1", "u-2"])
        finally:
            await rotated.close()
        granted_keys = {g.subject: g.key for g in grant.keys}
        for subject, k in again_keys.items():
            assert base64.urlsafe_b64encode(k.key).rstrip(b"=").decode() == granted_keys[subject]

        # No service role reaches the key store, and the key store's role reaches no read model.
        for dsn in (stack.query_dsn, stack.projector_dsn, stack.owner_dsn):
            conn = await asyncpg.connect(dsn)
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {keys.schema}.subject_keys")
            finally:
                await conn.close()
        conn = await asyncpg.connect(keys.url)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {isolated.name}.audit_entries")
        finally:
            await conn.close()


async def test_a_producer_without_its_keys_runs_no_body_and_sends_nothing(isolated: Isolated, tmp_path: Path) -> None:
    signing_key = NoteSigner.generate("hr-service")[1]
    for mode in ("closed", "open"):
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        settings = sealing_producer(isolated.producer, signing_key, dead, tmp_path / mode).model_copy(
            update={"failure_mode": mode, "key_timeout_s": 1.0}
        )
        ran = False
        async with AuditProducer("hr-service", settings) as audit:
            with pytest.raises(KeyServiceError):
                async with audit.action(
                    "update", entity=Entity(id="u-7", model="user"), actor=Actor.user("u-8"), tenant="acme"
                ):
                    ran = True
            assert audit.health()["spool_records"] == 0, "nothing personal is spooled in clear"
        assert not ran, f"fail-{mode}: the body must not run without the keys that seal its record"
    assert _raw_topic(isolated.stack.bootstrap, isolated.projector.audit_topic) == b""


async def _query_cli(isolated: Isolated, keys: KeyStoreFixture, *args: str) -> tuple[int, str, str]:
    """`audit-query ARGS` on this test's read model and key store, as an operator runs it."""
    env = {
        **isolated.query_env(),
        "AUDIT_QUERY_ADMIN_DATABASE_URL": isolated.stack.owner_dsn,
        "AUDIT_QUERY_KEYSTORE_URL": keys.url,
        "AUDIT_QUERY_KEYSTORE_SCHEMA": keys.schema,
        "AUDIT_QUERY_KEYSTORE_KEK": keys.kek,
        "COLUMNS": "300",
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-query"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def _psql(admin_dsn: str, sql: str) -> None:
    binary = shutil.which("psql") or sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    subprocess.run([binary, "-q", "-v", "ON_ERROR_STOP=1", admin_dsn], input=sql, text=True, check=True, timeout=60)


async def test_a_restored_key_store_backup_does_not_bring_an_erased_subject_back_and_a_replay_keeps_it_erased(
    isolated: Isolated, tmp_path: Path
) -> None:
    async with _sealing(isolated, tmp_path) as s:
        api, audit, keys, query, admin = s.api, s.audit, s.keys, s.query, s.admin
        stack = isolated.stack
        history = await record_history(audit, stack.bootstrap, generated=8)
        with shipping(audit):
            ids = await _personal_actions(audit)

        async def dora() -> Any:
            answer = await api.get(f"/v1/traces/{ids['update']}")
            return answer.json()["entry"]["user"]["id"] if answer.status_code == 200 else None

        assert await eventually(dora, within=60) == "u-dora"
        backup = _pg_dump(s.admin_dsn, keys.schema)  # the nightly backup, taken before the erasure

        code, out, err = await _query_cli(
            isolated, keys, "subjects", "erase", "--tenant", "acme", "--subject", "u-dora", "--by", "dpo"
        )
        assert code == 0, err
        report = json.loads(out)
        assert report["key_generations_destroyed"] == [1]
        code, out, err = await _query_cli(
            isolated, keys, "subjects", "erase", "--tenant", "acme", "--subject", "u-dora"
        )
        assert code == 0, err  # erasing again destroys nothing more, and says so
        assert json.loads(out)["key_generations_destroyed"] == []

        async def shown_as(value: Any) -> bool | None:
            return (await dora()) == value or None

        await eventually(lambda: shown_as({"$erased": True}), within=15)

        async def recorded() -> bool | None:
            async with isolated.owner() as conn:
                n = await conn.fetchval(
                    "SELECT count(*) FROM audit_entries e JOIN audit_outcomes o USING (audit_id)"
                    " WHERE e.entity_model = 'data_subject' AND e.entity_id = $1",
                    report["pseudonym"],
                )
            return n == 2 or None

        await eventually(recorded, within=30)

        # The backup restored: the erased key is back, and with it the person's data...
        tables = "subject_keys, erasures, legal_holds, tenant_secrets, key_store_migrations"
        _psql(s.admin_dsn, f"TRUNCATE {keys.schema}.{tables.replace(', ', f', {keys.schema}.')};")
        _psql(s.admin_dsn, backup)
        await eventually(lambda: shown_as("u-dora"), within=15)
        # ...until the erasures the audit log keeps apart are applied again.
        code, out, err = await _query_cli(isolated, keys, "subjects", "reapply")
        assert code == 0, err
        assert json.loads(out) == {"erasures_recorded": 2, "keys_destroyed": 1}
        await eventually(lambda: shown_as({"$erased": True}), within=15)
        code, out, err = await _query_cli(isolated, keys, "subjects", "reapply")
        assert json.loads(out)["keys_destroyed"] == 0

        # A rebuild from the log keeps the ciphertext: the replayed read model shows the person erased, another
        # tenant's same id opened, and it matches the log.
        shadow = f"{isolated.name}_replayed"
        replaying = isolated.projector.model_copy(update={"db_schema": shadow, "group_id": f"{shadow}-replay"})
        await replay(replaying, stack.owner_dsn, timeout_s=120)  # its own group: the live projector still runs
        async with query_client(query.model_copy(update={"db_schema": shadow}), admin) as replayed:
            entry = (await replayed.get(f"/v1/traces/{ids['update']}")).json()["entry"]
            assert entry["user"] == {"type": "user", "id": {"$erased": True}, "display_name": {"$erased": True}}
            other = (await replayed.get(f"/v1/traces/{ids['globex']}")).json()["entry"]
            assert other["user"]["display_name"] == "Dora of Globex"
        async with isolated.owner() as conn:
            assert (await compare(conn, isolated.name, shadow)).differences == []
            replayed_entries = await conn.fetchval(f"SELECT count(DISTINCT audit_id) FROM {shadow}.audit_entries")
            assert replayed_entries >= len(history.audit_ids)


@contextlib.asynccontextmanager
async def _serving_on(settings: QuerySettings, port: int) -> AsyncIterator[str]:
    """The query API on a given loopback port (so it can go away and come back where producers expect it)."""
    server = uvicorn.Server(server_config(create_app(settings), settings, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # bounded: 10 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        if task.done():
            await task
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _spooled_bytes(spool: Path) -> bytes:
    """Everything the producer's spool holds, values and headers decoded from the files' base64."""
    out = b""
    for path in sorted(spool.rglob("*")):
        if path.is_file():
            raw = path.read_bytes()
            out += raw
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(raw)
                out += base64.b64decode(record["key"]) + base64.b64decode(record["value"])
                out += b"".join(base64.b64decode(v) for _, v in record["headers"])
    return out


async def test_fail_open_without_the_key_service_runs_the_body_keeps_nothing_in_clear_and_seals_once_it_answers(
    isolated: Isolated, tmp_path: Path
) -> None:
    stack = isolated.stack
    if stack.admin_dsn is None:
        pytest.skip("needs the stack's superuser to create the test's key-store schema")
    port = free_port()
    async with key_store(stack.admin_dsn, stack.query_dsn, isolated.name) as keys:
        query = keys.query(isolated.query)
        signing_key = await register_producer(stack.owner_dsn, query.control_schema, "profile-service", None)
        async with _serving_on(query, port) as base, httpx.AsyncClient() as client:
            escrow_key = (await client.get(f"{base}/v1/subject-keys/escrow-key")).json()["public_key"]
        spool = tmp_path / "spool"
        settings = sealing_producer(isolated.producer, signing_key, base, spool).model_copy(
            update={"failure_mode": "open", "key_escrow_public_key": escrow_key, "key_timeout_s": 1.0}
        )
        erin = Actor.user("u-erin", "Erin Escrow")
        request = RequestContext(client_ip="192.0.2.44", user_agent="ErinAgent/2")
        ran = []
        async with AuditProducer("profile-service", settings) as audit, projector_running(isolated.projector):
            async with audit.action(
                "update", entity=Entity(id="u-erin", model="user"), actor=erin, tenant="acme", request=request
            ) as act:
                ran.append(act.trace_id)
                act.change("email", "erin@old.example", "erin@new.example")
            async with audit.action("execute", entity=Entity(id="res-5", model="resource"), actor=erin, tenant="acme"):
                ran.append("second")
            assert len(ran) == 2, "fail-open: the bodies ran without the key service"
            assert audit.health()["spool_records"] == 4  # both starts and outcomes wait, in order
            held = _spooled_bytes(spool)
            for value in ("u-erin", "Erin Escrow", "192.0.2.44", "ErinAgent", "erin@old.example", "erin@new.example"):
                assert value.encode() not in held, f"{value!r} in clear in the spool"
            assert _raw_topic(stack.bootstrap, isolated.projector.audit_topic) == b""

            admin = await isolated.token(("audit:read",))
            async with (
                _serving_on(query, port),
                httpx.AsyncClient(base_url=base, timeout=15, headers={"authorization": f"Bearer {admin}"}) as api,
            ):

                async def completed() -> dict[str, Any] | None:
                    answer = await api.get(f"/v1/traces/{ran[0]}")
                    if answer.status_code != 200 or answer.json()["entry"]["outcome"]["status"] != "succeeded":
                        return None
                    entry: dict[str, Any] = answer.json()["entry"]
                    return entry

                entry = await eventually(completed, within=60)
                assert entry["user"] == {"type": "user", "id": "u-erin", "display_name": "Erin Escrow"}
                assert entry["entity"] == {"id": "u-erin", "model": "user"}
                assert entry["request"]["client_ip"] == "192.0.2.44"
                assert entry["outcome"]["changes"]["email"] == {
                    "before": "erin@old.example",
                    "after": "erin@new.example",
                }
                assert await _found(api, tenant="acme", user_id="u-erin") == 2
            assert audit.health()["spool_records"] == 0
        raw = _raw_topic(stack.bootstrap, isolated.projector.audit_topic)
        assert raw.count(b"\n") == 4
        for needle in (b"u-erin", b"Erin Escrow", b"192.0.2.44", b"erin@new.example", b"withheld"):
            assert needle not in raw


def _console_after_erasure(chromedriver: str, base: str, token: str, trace_id: str) -> dict[str, str]:
    """Runs in a thread (Selenium blocks): the erased person as the console shows them, in the log and the trace."""
    browser = _browser(chromedriver)
    wait = WebDriverWait(browser, 30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(f"{base}/login")
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#rows tr.entry"))
        browser.get(f"{base}/?q=tenant:acme%20model:user")
        wait.until(lambda b: "(erased)" in b.find_element(By.ID, "rows").text)
        rows = browser.find_element(By.ID, "rows").text
        browser.save_screenshot(str(ARTIFACTS / "console-erased-list.png"))
        browser.get(f"{base}/traces/{trace_id}")
        wait.until(lambda b: "(erased)" in b.find_element(By.ID, "trace-entry").text)
        wait.until(lambda b: "(erased)" in b.find_element(By.ID, "trace-view").text)
        browser.save_screenshot(str(ARTIFACTS / "console-erased-trace.png"))
        return {"rows": rows, "trace": browser.find_element(By.ID, "trace-view").text}
    finally:
        browser.quit()


@pytest.mark.browser
async def test_the_console_shows_an_erased_person_as_erased(
    isolated: Isolated, tmp_path: Path, chromedriver: str
) -> None:
    async with _sealing(isolated, tmp_path) as s:
        api, audit, base, admin = s.api, s.audit, s.base, s.admin
        stack = isolated.stack
        await record_history(audit, stack.bootstrap, generated=4)
        with shipping(audit):
            ids = await _personal_actions(audit)

        async def projected() -> bool | None:
            answer = await api.get(f"/v1/traces/{ids['update']}")
            return (answer.status_code == 200 and len(answer.json()["logs"]) >= 1) or None

        await eventually(projected, within=60)
        erased = await api.post("/v1/subjects/erase", json={"tenant": "acme", "subject": "u-dora"})
        assert erased.status_code == 200, erased.text
        seen = await asyncio.to_thread(_console_after_erasure, chromedriver, base, admin, ids["update"])
    assert "Dora Personal" not in seen["rows"] + seen["trace"]
    assert "dora@new.example" not in seen["trace"]
    assert "theme" in seen["trace"]  # what is not personal still shows
    assert "email (erased) (erased)" in seen["trace"]  # an erased change is still shown as a change
    assert "(erased) person" in seen["trace"]
