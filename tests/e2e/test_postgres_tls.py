"""Every service talks to PostgreSQL over TLS with `sslmode=verify-full`, and refuses a server it cannot verify."""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import PostgresDsn

from audit_producer import Actor, AuditProducer, Entity
from tests.conftest import Isolated, projector_running, query_client
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

CI = Actor.service_account("sa-ci", "CI Deployer")
RESOURCE = Entity(id="res-tls", model="resource")


def _verify_full(dsn: str, ca_file: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}sslmode=verify-full&sslrootcert={ca_file}"


def _ca(isolated: Isolated) -> str:
    if isolated.stack.ca_file is None:
        pytest.skip("the given stack names no CA for its PostgreSQL (set AUDIT_TEST_CA_FILE)")
    return isolated.stack.ca_file


async def test_projector_and_query_api_run_over_verified_tls(isolated: Isolated, audit: AuditProducer) -> None:
    ca = _ca(isolated)
    projector = isolated.projector.model_copy(
        update={"database_url": PostgresDsn(_verify_full(isolated.stack.projector_dsn, ca))}
    )
    query = isolated.query.model_copy(update={"database_url": PostgresDsn(_verify_full(isolated.stack.query_dsn, ca))})
    async with projector_running(projector), query_client(query, await isolated.token()) as client:
        async with audit.action("execute", entity=RESOURCE, actor=CI, tenant="acme") as act:
            act.change("transport", "plaintext", "tls")

        async def served() -> Any:
            body = (await client.get("/v1/audit")).json()
            done = [e for e in body.get("data", []) if e["outcome"]["status"] != "in_progress"]
            return done or None

        entries = await eventually(served, within=30)
        assert [e["audit_id"] for e in entries] == [str(act.audit_id)]


async def _migrate(isolated: Isolated, dsn: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"), "migrate", "--dsn", dsn,
        env=isolated.projector_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_server_the_client_cannot_verify_is_refused(isolated: Isolated, tmp_path: Path) -> None:
    ca = _ca(isolated)
    code, out = await _migrate(isolated, _verify_full(isolated.stack.owner_dsn, ca))
    assert code == 0, out
    # A CA that did not sign the server's certificate: refused with a clear error, not a traceback.
    other = tmp_path / "other-ca.crt"
    await asyncio.to_thread(
        subprocess.run,
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=someone else", "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    wrong = _verify_full(isolated.stack.owner_dsn, str(other))
    code, out = await _migrate(isolated, wrong)
    assert code == 1, out
    assert "certificate verify failed" in out, out
    assert "Traceback" not in out, out
    # The query API given the wrong CA stays alive but is not ready and serves no read from an unverified server.
    query = isolated.query.model_copy(
        update={"database_url": PostgresDsn(_verify_full(isolated.stack.query_dsn, str(other)))}
    )
    async with query_client(query, await isolated.token()) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["postgres"]["ok"] is False
        assert (await client.get("/v1/audit")).status_code == 503
