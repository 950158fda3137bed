"""The compose stack as a user brings it up (with the host-network override our engine needs): actions recorded
with the producer library from the host come back through the containerised query API, and the demo runs."""

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity
from audit_producer.config import Settings as ProducerSettings
from tests.conftest import ROOT, free_port
from tests.polling import eventually

COMPOSE = ["docker", "compose", "-f", str(ROOT / "deploy" / "docker-compose.yml"),
           "-f", str(ROOT / "deploy" / "docker-compose.host.yml")]  # fmt: skip


@dataclass(frozen=True)
class ComposeStack:
    """A running compose project and where its services listen."""

    project: str
    env: dict[str, str]
    bootstrap: str
    api: str
    health: str

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `docker compose -p <project> ...` against this stack."""
        return subprocess.run(
            [*COMPOSE, "-p", self.project, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """`docker compose up --wait` on free loopback ports; always `down -v` afterwards."""
    ports = {name: free_port() for name in ("KAFKA", "KAFKA_CONTROLLER", "PG", "QUERY", "PROJECTOR_HEALTH")}
    env = {**os.environ, **{f"AUDIT_{name}_PORT": str(port) for name, port in ports.items()}}
    stack = ComposeStack(
        f"audit-trail-smoke-{uuid4().hex[:8]}",
        env,
        f"127.0.0.1:{ports['KAFKA']}",
        f"http://127.0.0.1:{ports['QUERY']}",
        f"http://127.0.0.1:{ports['PROJECTOR_HEALTH']}",
    )
    try:
        up = stack.compose("up", "--no-build", "--wait", "--wait-timeout", "240", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", timeout=60).stdout
        Path(tmp_path_factory.getbasetemp(), f"{stack.project}.log").write_text(logs)
        down = stack.compose("--profile", "demo", "down", "-v", "--remove-orphans", timeout=120)
        assert down.returncode == 0, down.stderr


def _token(stack: ComposeStack) -> str:
    out = stack.compose("exec", "-T", "query", "cat", "/var/lib/audit-trail/secrets/demo-token", timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def test_actions_recorded_from_the_host_come_back_through_the_containerised_api(
    compose_stack: ComposeStack, tmp_path: Path
) -> None:
    settings = ProducerSettings(bootstrap_servers=compose_stack.bootstrap, publish_timeout_s=20, spool_dir=tmp_path)
    entity = Entity(id=f"res-{uuid4().hex[:8]}", model="resource")
    ids = []
    async with AuditProducer("compose-smoke", settings) as audit:
        for action in ("create", "update", "execute"):
            async with audit.action(action, entity=entity, actor=Actor.user("u-ci", "CI"), tenant="demo") as scope:
                ids.append(str(scope.audit_id))
    headers = {"authorization": f"Bearer {_token(compose_stack)}"}
    async with httpx.AsyncClient(base_url=compose_stack.api, headers=headers, timeout=10) as client:

        async def entity_log() -> list[dict[str, Any]] | None:
            r = await client.get(f"/v1/entities/resource/{entity.id}/audit")
            data: list[dict[str, Any]] = r.json()["data"] if r.status_code == 200 else []
            done = len(data) == 3 and all(e["outcome"]["status"] == "succeeded" for e in data)
            return data if done else None

        entries = await eventually(entity_log, within=60)
        assert sorted(e["audit_id"] for e in entries) == sorted(ids)
        assert {e["source"] for e in entries} == {"compose-smoke"}
        assert (await client.get("/readyz")).json()["status"] == "ok"
        # The token is the demo tenant's: what the demo imported for other tenants stays invisible.
        assert all(e["tenant_id"] == "demo" for e in (await client.get("/v1/audit")).json()["data"])
    async with httpx.AsyncClient(base_url=compose_stack.health, timeout=10) as client:
        ready = (await client.get("/readyz")).json()
    assert ready["ready"] is True, ready


def test_the_demo_runs_against_the_compose_stack(compose_stack: ComposeStack) -> None:
    result = compose_stack.compose("run", "--rm", "--no-deps", "demo", timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "13/13 demo actions are in the read model." in result.stdout
    assert f"Web UI:        {compose_stack.api}/" in result.stdout
    assert "atr_" in result.stdout, "the demo prints a token to sign in with"


def test_the_setup_is_idempotent_and_keeps_its_secrets(compose_stack: ComposeStack) -> None:
    before = _token(compose_stack)
    again = compose_stack.compose("run", "--rm", "--no-deps", "setup", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "applied nothing" in again.stdout + again.stderr
    assert _token(compose_stack) == before
