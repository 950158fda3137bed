"""The published distributions as a user gets them: wheels built from this repository, the producer's installed
alone into a clean virtualenv, recording an action that the projector stores and the query API serves."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

PROJECTS = ("schemas", "services/producer", "services/audit_projector", "services/query_api")
SERVICE_ONLY = {"fastapi", "starlette", "uvicorn", "asyncpg", "typer", "rich", "httpx", "joserfc", "lark", "uvloop"}

RECORD = textwrap.dedent(
    """
    import asyncio
    from audit_producer import Actor, AuditProducer, Entity
    from audit_producer.config import Settings

    async def main() -> None:
        async with AuditProducer("wheel-user", Settings()) as audit:
            async with audit.action(
                "create", entity=Entity(id="res-wheel", model="resource"), actor=Actor.user("u-w", "Wheel User"),
                tenant="acme",
            ) as scope:
                print(f"audit_id={scope.audit_id}")  # structlog writes to stdout too

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four wheels, built from the working tree the way a release would build them."""
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--wheel-dir", str(out), *(str(ROOT / p) for p in PROJECTS)],
        check=True, timeout=300,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def producer_venv(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only the producer's wheel (and what it declares) installed."""
    venv = tmp_path_factory.mktemp("producer-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--find-links", str(wheels), "audit-trail-producer==0.1.0"],
        check=True, timeout=600,
    )  # fmt: skip
    return venv


def _installed(venv: Path) -> set[str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return {p["name"].lower().replace("_", "-") for p in json.loads(out)}


def test_each_wheel_holds_only_its_own_package(wheels: Path) -> None:
    expected = {
        "audit_trail_schemas": "audit_schemas/",
        "audit_trail_producer": "audit_producer/",
        "audit_trail_projector": "audit_projector/",
        "audit_trail_query": "audit_query/",
    }
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 4, built
    for wheel in built:
        package = expected[wheel.name.split("-")[0]]
        names = zipfile.ZipFile(wheel).namelist()
        code = [n for n in names if ".dist-info/" not in n]
        assert code, wheel.name
        assert all(n.startswith(package) for n in code), (wheel.name, code[:5])
        assert not [n for n in code if "__pycache__" in n or n.endswith(".pyc")]
    projector = next(w for w in built if w.name.startswith("audit_trail_projector"))
    assert any(n.endswith(".sql") for n in zipfile.ZipFile(projector).namelist()), "migrations missing"
    query = next(w for w in built if w.name.startswith("audit_trail_query"))
    assert any(n.startswith("audit_query/static/") for n in zipfile.ZipFile(query).namelist()), "console missing"


def test_the_producer_wheel_installs_without_service_dependencies(producer_venv: Path) -> None:
    installed = _installed(producer_venv)
    assert {"audit-trail-producer", "audit-trail-schemas", "aiokafka"} <= installed
    assert not installed & (SERVICE_ONLY | {"audit-trail-projector", "audit-trail-query"}), installed
    # Its command line says which extra it needs instead of a traceback.
    result = subprocess.run(
        [str(producer_venv / "bin" / "audit-producer"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "pip install 'audit-trail-producer[cli]'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_action_recorded_with_only_the_producer_wheel(
    producer_venv: Path, isolated: Isolated, projector: asyncio.Task[None], api: httpx.AsyncClient
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AUDIT_PRODUCER_BOOTSTRAP_SERVERS": isolated.producer.bootstrap_servers,
        "AUDIT_PRODUCER_AUDIT_TOPIC": isolated.producer.audit_topic,
        "AUDIT_PRODUCER_EXECUTION_LOG_TOPIC": isolated.producer.execution_log_topic,
        "AUDIT_PRODUCER_SPOOL_DIR": str(producer_venv / "spool"),
    }
    proc = await asyncio.create_subprocess_exec(
        str(producer_venv / "bin" / "python"), "-c", RECORD, env=env, cwd=producer_venv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    audit_id = next(line for line in out.decode().splitlines() if line.startswith("audit_id=")).partition("=")[2]

    async def served() -> dict[str, Any] | None:
        r = await api.get(f"/v1/audit/{audit_id}")
        done = r.status_code == 200 and r.json()["entry"]["outcome"]["status"] == "succeeded"
        return r.json()["entry"] if done else None

    entry = await eventually(served)
    assert entry["entity"] == {"id": "res-wheel", "model": "resource"}
    assert (entry["tenant_id"], entry["source"], entry["user"]["id"]) == ("acme", "wheel-user", "u-w")
