"""Readers' access: credentials, scopes, tenants walled off by PostgreSQL, JWTs, token management, hardening."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import structlog
import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from audit_producer import Actor, AuditProducer, Entity
from audit_query.auth import new_secret, secret_hash
from audit_query.main import create_app, server_config
from audit_query.models import AuditFilter, SortOrder
from audit_query.pools import Pools
from audit_query.repository import AuditRepository, TokenAdmin
from tests.conftest import Isolated, free_port
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _two_tenants(audit: AuditProducer, api: httpx.AsyncClient) -> dict[str, UUID]:
    """acme and globex each act on an entity with the same id; returns audit ids by tenant."""
    ids = {}
    for tenant in ("acme", "globex"):
        async with audit.action(
            "update", entity=Entity(id="shared-1", model="resource"), actor=Actor.user(f"u-{tenant}"), tenant=tenant
        ) as act:
            act.change("size", 1, 2)
            ids[tenant] = act.audit_id

    async def both() -> bool:
        return bool((await api.get("/v1/audit")).json()["count"] == 2)

    await eventually(both)
    return ids


async def _client(api: httpx.AsyncClient, token: str | None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=str(api.base_url), headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("header", "invalid"),
    [
        (None, False),
        ("Bearer atr_not-a-real-token", True),
        ("Bearer something-else", True),
        ("Basic dXNlcjpwdw==", False),
    ],
)
async def test_missing_or_invalid_credentials_are_401_with_a_challenge(
    api: httpx.AsyncClient, header: str | None, invalid: bool
) -> None:
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        response = await anonymous.get("/v1/audit", headers={"authorization": header} if header else {})
    assert response.status_code == 401
    assert response.json()["detail"]
    assert response.headers["www-authenticate"].startswith('Bearer realm="audit-trail"')
    assert ('error="invalid_token"' in response.headers["www-authenticate"]) is invalid


async def test_revoked_and_expired_tokens_are_refused_and_scopes_are_enforced(
    isolated: Isolated, api: httpx.AsyncClient
) -> None:
    reader = await isolated.token(("audit:read",), ("acme",))
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        admin = TokenAdmin(conn, isolated.query.control_schema)
        expired = new_secret()
        await admin.create(
            uuid4(), "old", secret_hash(expired), ["audit:read"], None, "t", datetime.now(UTC) - timedelta(minutes=1)
        )
        doomed = new_secret()
        doomed_id = uuid4()
        await admin.create(doomed_id, "doomed", secret_hash(doomed), ["audit:read"], None, "t", None)
        async with await _client(api, reader) as c:
            assert (await c.get("/v1/audit")).status_code == 200
            forbidden = await c.get("/v1/dead-letters")
            assert forbidden.status_code == 403
            assert "audit:admin" in forbidden.json()["detail"]
        async with await _client(api, expired) as c:
            assert (await c.get("/v1/audit")).status_code == 401
        async with await _client(api, doomed) as c:
            assert (await c.get("/v1/audit")).status_code == 200
            assert await admin.revoke(doomed_id, "t") is not None
            assert (await c.get("/v1/audit")).status_code == 401, "revocation takes effect at once"
    finally:
        await conn.close()
    assert (await api.get("/v1/dead-letters")).status_code == 200


async def test_another_tenants_entries_are_404_and_never_listed(
    isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    ids = await _two_tenants(audit, api)
    token = await isolated.token(("audit:read",), ("acme",))
    async with await _client(api, token) as acme:
        listed = (await acme.get("/v1/audit")).json()
        assert [row["tenant_id"] for row in listed["data"]] == ["acme"]
        assert (await acme.get("/v1/audit", params={"tenant": "globex"})).json()["count"] == 0
        assert (await acme.get(f"/v1/audit/{ids['globex']}")).status_code == 404
        assert (await acme.get(f"/v1/traces/{ids['globex'].hex}")).status_code == 404
        assert (await acme.get(f"/v1/audit/{ids['acme']}")).status_code == 200
        history = (await acme.get("/v1/entities/resource/shared-1/audit")).json()
        assert [row["tenant_id"] for row in history["data"]] == ["acme"], "same entity id, other tenant hidden"
        # A cursor minted for an all-tenant view does not carry into a tenant's view.
        page = (await api.get("/v1/audit", params={"limit": 1})).json()
        foreign = await acme.get("/v1/audit", params={"limit": 1, "cursor": page["next_cursor"]})
        assert foreign.status_code == 400


async def test_postgres_itself_walls_tenants_off_for_every_statement_the_api_uses(
    isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    ids = await _two_tenants(audit, api)
    conn = await asyncpg.connect(isolated.stack.query_dsn, server_settings={"search_path": isolated.name})
    try:
        tables = ("audit_entries", "audit_outcomes", "execution_logs", "audit_ids", "dead_letters")

        async def counts(tenants: str | None) -> dict[str, int]:
            async with conn.transaction():
                if tenants is not None:
                    await conn.execute("SELECT set_config('audit.tenants', $1, true)", tenants)
                return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}

        assert await counts(None) == dict.fromkeys(tables, 0), "no tenants set: nothing"
        acme = await counts("acme")
        assert (acme["audit_entries"], acme["audit_outcomes"], acme["audit_ids"], acme["dead_letters"]) == (1, 1, 1, 0)
        everyone = await counts("*")
        assert (everyone["audit_entries"], everyone["audit_outcomes"]) == (2, 2)
        # After the transaction the setting is gone ('' rather than NULL): still nothing.
        assert await conn.fetchval("SELECT count(*) FROM audit_entries") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_entries SET tenant_id = 'acme'")
    finally:
        await conn.close()
    pools = await Pools.open(isolated.stack.query_dsn, None, isolated.name)
    repo = AuditRepository(pools.read, timedelta(hours=1))
    try:
        rows = await repo.list_entries("acme", AuditFilter(), "time", SortOrder.DESC, 50, None)
        assert {json.loads(r.entry_json)["tenant_id"] for r in rows} == {"acme"}
        assert await repo.trace_since("acme", ids["globex"], {}, 10) == ([], False)
        assert await repo.trace_json("acme", ids["globex"], 100) is None
        own = await repo.trace_json("acme", ids["acme"], 100)
        assert own is not None
        assert json.loads(own.entry)["tenant_id"] == "acme"
        assert await repo.trace_json("", ids["acme"], 100) is None
        assert await repo.dead_letters("acme", None, 10) == []
        assert await repo.trace_since("", ids["acme"], {}, 10) == ([], False), "an empty tenant list sees nothing"
    finally:
        await pools.close()


async def test_public_routes_need_no_credential_and_every_response_is_hardened(api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        for path in ("/healthz", "/readyz", "/metrics", "/login", "/static/login.js", "/docs", "/openapi.json"):
            response = await anonymous.get(path)
            assert response.status_code == 200, path
            assert "server" not in response.headers, path
            csp = response.headers["content-security-policy"]
            script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
            assert "unsafe-inline" not in script_src
            assert "frame-ancestors 'none'" in csp
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        docs = (await anonymous.get("/docs")).text
        assert "<script>" not in docs, "no inline script"
        assert "cdn" not in docs.lower()
        bundle = await anonymous.get("/static/swagger/swagger-ui-bundle.js")
        assert bundle.status_code == 200
        assert len(bundle.content) > 100_000, "Swagger UI is served from the package, offline"
        spec = (await anonymous.get("/openapi.json")).json()
        assert {"HTTPBearer", "APIKeyCookie"} <= set(spec["components"]["securitySchemes"])


async def test_every_authenticated_request_is_in_the_access_log(isolated: Isolated, api: httpx.AsyncClient) -> None:
    token = await isolated.token(("audit:read",), ("acme", "globex"))
    with structlog.testing.capture_logs() as logs:
        async with await _client(api, token) as c:
            await c.get("/v1/audit")
            await c.get("/v1/dead-letters")

        async def both_logged() -> bool:  # the line is written once the response is on its way
            return len([e for e in logs if e.get("event") == "request"]) == 2

        await eventually(both_logged, within=5, interval=0.02)
    access = [e for e in logs if e.get("event") == "request"]
    assert [(e["route"], e["status"], e["tenants"]) for e in access] == [
        ("/v1/audit", 200, "acme,globex"),
        ("/v1/dead-letters", 403, "acme,globex"),
    ]
    assert all(e["principal"].startswith("test-") for e in access)
    assert token not in json.dumps(logs, default=str), "credentials never reach the logs"


class _Jwks:
    """A key set served on loopback, as an identity provider's JWKS endpoint."""

    def __init__(self, keys: KeySet) -> None:
        body = json.dumps(keys.as_dict(private=False)).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def idp() -> Iterator[tuple[RSAKey, str]]:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
    jwks = _Jwks(KeySet([key]))
    try:
        yield key, jwks.url
    finally:
        jwks.server.shutdown()
        jwks.server.server_close()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "https://idp.test",
        "aud": "audit-trail",
        "sub": "alice@example.test",
        "iat": now,
        "exp": now + 300,
        "scope": "openid audit:read",
        "audit_tenants": ["acme"],
        **overrides,
    }


def _part(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    return f"{_part({'alg': 'none', 'typ': 'JWT'})}.{_part(claims)}."


def _hmac_with_public_key(key: RSAKey, claims: dict[str, Any]) -> str:
    """The classic confusion attack: HS256 with the provider's public key as the shared secret."""
    signing_input = f"{_part({'alg': 'HS256', 'kid': 'k1'})}.{_part(claims)}"
    mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_oidc_access_tokens_are_verified_against_the_providers_keys(
    isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient, idp: tuple[RSAKey, str]
) -> None:
    key, jwks_url = idp
    await _two_tenants(audit, api)
    settings = isolated.query.model_copy(
        update={"oidc_issuer": "https://idp.test", "oidc_audience": "audit-trail", "oidc_jwks_url": jwks_url}
    )
    server = uvicorn.Server(server_config(create_app(settings), settings, port=free_port(), log_level="warning"))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), within=10, interval=0.02)
    base = f"http://127.0.0.1:{server.config.port}"
    header = {"alg": "RS256", "kid": "k1"}
    try:
        async with httpx.AsyncClient(base_url=base) as c:

            async def get(token: str) -> httpx.Response:
                return await c.get("/v1/audit", headers={"authorization": f"Bearer {token}"})

            good = await get(jwt.encode(header, _claims(), key))
            assert good.status_code == 200
            assert [r["tenant_id"] for r in good.json()["data"]] == ["acme"]
            everyone = await get(jwt.encode(header, _claims(audit_tenants="*", scope="audit:admin"), key))
            assert everyone.json()["count"] == 2
            now = int(time.time())
            refused = {
                "expired": jwt.encode(header, _claims(exp=now - 120), key),
                "not yet valid": jwt.encode(header, _claims(nbf=now + 600), key),
                "other audience": jwt.encode(header, _claims(aud="someone-else"), key),
                "other issuer": jwt.encode(header, _claims(iss="https://evil.test"), key),
                "unsigned (alg none)": _unsigned(_claims()),
                "HMAC with the public key (algorithm confusion)": _hmac_with_public_key(key, _claims()),
                "unknown key": jwt.encode(
                    {"alg": "RS256", "kid": "k2"}, _claims(), RSAKey.generate_key(2048, parameters={"kid": "k2"})
                ),
                "tampered": jwt.encode(header, _claims(), key)[:-4] + "AAAA",
            }
            for why, token in refused.items():
                response = await get(token)
                assert response.status_code == 401, why
                assert 'error="invalid_token"' in response.headers["www-authenticate"], why
            no_scope = await get(jwt.encode(header, _claims(scope="openid profile"), key))
            assert no_scope.status_code == 403
            signed_in = await c.post("/v1/session", json={"credential": jwt.encode(header, _claims(), key)})
            assert signed_in.status_code == 200
            assert signed_in.json()["tenants"] == ["acme"]
            # A session ends no later than the JWT it was opened with (not after the 8-hour session TTL).
            c.cookies.clear()
            short = jwt.encode(header, _claims(exp=int(time.time()) + 3), key)
            opened = await c.post("/v1/session", json={"credential": short})
            assert opened.status_code == 200
            assert int(opened.headers["set-cookie"].split("Max-Age=")[1].split(";")[0]) <= 3
            cookie = opened.cookies["audit_session"]
            c.cookies.clear()
            c.cookies.set("audit_session", cookie)  # kept by a careless client past its Max-Age
            assert (await c.get("/v1/session")).status_code == 200
            await asyncio.sleep(3.5)
            ended = await c.get("/v1/session")
            assert ended.status_code == 401
            assert "session has ended or expired" in ended.json()["detail"]
            stale = await c.post("/v1/session", json={"credential": jwt.encode(header, _claims(exp=now - 10), key)})
            assert stale.status_code == 401  # within the clock-skew leeway, but no session for a spent credential
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


async def _cli(isolated: Isolated, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`audit-query` with only what the token commands use: no cursor secret, read DSN or server settings (in
    production, where the server would refuse to start without a cursor secret)."""
    env = {
        "AUDIT_QUERY_ENVIRONMENT": "production",
        "AUDIT_QUERY_ADMIN_DATABASE_URL": isolated.stack.owner_dsn,
        "AUDIT_QUERY_CONTROL_SCHEMA": isolated.query.control_schema,
        "AUDIT_QUERY_BOOTSTRAP_SERVERS": isolated.stack.bootstrap,
        "AUDIT_QUERY_TOPICS": json.dumps(list(isolated.query.topics)),
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_QUERY_")}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-query"),
        *args,
        env={**inherited, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_token_commands_create_list_revoke_and_are_audited(
    isolated: Isolated, projector: Any, api: httpx.AsyncClient
) -> None:
    code, out, err = await _cli(
        isolated, "tokens", "create", "--name", "grafana", "--scope", "audit:read", "--tenant", "acme",
        "--expires-in", "30d", "--by", "ada",
    )  # fmt: skip
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("atr_")
    assert len(secret) >= 4 + 43, "256 bits of secret"
    async with await _client(api, secret) as c:
        assert (await c.get("/v1/audit")).status_code == 200
    code, out, err = await _cli(isolated, "tokens", "list")
    assert code == 0, err
    assert "grafana" in out
    assert secret not in out + err
    conn = await asyncpg.connect(isolated.stack.owner_dsn)
    try:
        token_id = await conn.fetchval(
            f"SELECT id FROM {isolated.query.control_schema}.api_tokens WHERE name = 'grafana'"
        )
        stored = await conn.fetchval(
            f"SELECT secret_hash FROM {isolated.query.control_schema}.api_tokens WHERE id = $1", token_id
        )
    finally:
        await conn.close()
    assert stored == secret_hash(secret), "only the hash is stored"
    code, _, err = await _cli(isolated, "tokens", "check", stdin=secret + "\n")
    assert (code, "grafana" in err) == (0, True), err
    assert secret not in err
    code, _, err = await _cli(isolated, "tokens", "check", stdin="atr_" + "x" * 43)
    assert (code, "not a live token" in err) == (1, True), err
    code, _, err = await _cli(isolated, "tokens", "check", stdin="\x00\n")
    assert code in (1, 2), err
    code, _, err = await _cli(isolated, "tokens", "check")
    assert code == 2, err
    code, _, err = await _cli(isolated, "tokens", "revoke", str(token_id), "--by", "ada")
    assert code == 0, err
    code, _, err = await _cli(isolated, "tokens", "check", stdin=secret)
    assert code == 1, "revoked"
    async with await _client(api, secret) as c:
        assert (await c.get("/v1/audit")).status_code == 401
    code, _, err = await _cli(isolated, "tokens", "revoke", str(token_id))
    assert code == 1, "already revoked"
    code, _, err = await _cli(isolated, "tokens", "create", "--name", "x")
    assert code == 2
    assert "--tenant" in err

    async def audited() -> list[dict[str, Any]] | None:
        body = (await api.get("/v1/audit", params={"model": "api_token"})).json()
        return body["data"] if body["count"] == 2 else None

    entries = await eventually(audited)
    assert sorted(e["event"] for e in entries) == ["create", "delete"]
    assert {e["entity"]["id"] for e in entries} == {str(token_id)}
    assert {e["user"]["id"] for e in entries} == {"ada"}
    assert {e["tenant_id"] for e in entries} == {"platform"}
