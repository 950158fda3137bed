"""The console entry points: real work on good input, a non-zero exit and a message on bad input."""

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _run(command: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run an installed console script (from this interpreter's environment)."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / command),
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def _producer_env(isolated: Isolated) -> dict[str, str]:
    return {
        "AUDIT_PRODUCER_BOOTSTRAP_SERVERS": isolated.stack.bootstrap,
        "AUDIT_PRODUCER_AUDIT_TOPIC": isolated.producer.audit_topic,
        "AUDIT_PRODUCER_EXECUTION_LOG_TOPIC": isolated.producer.execution_log_topic,
    }


async def test_emit_records_an_action(isolated: Isolated, projector: Any, api: httpx.AsyncClient) -> None:
    code, out, err = await _run(
        "audit-producer",
        "emit",
        "approve",
        "--model",
        "template",
        "--entity-id",
        "t-1",
        "--tenant",
        "acme",
        "--actor-id",
        "u-9",
        "--actor-name",
        "Cli User",
        env=_producer_env(isolated),
    )
    assert code == 0, err
    audit_id = out.strip()

    async def landed() -> dict[str, Any] | None:
        response = await api.get(f"/v1/audit/{audit_id}")
        return response.json() if response.status_code == 200 else None

    entry = (await eventually(landed))["entry"]
    assert (entry["event"], entry["entity"]["id"], entry["user"]["display_name"]) == ("approve", "t-1", "Cli User")


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["emit", "teleport", "--model", "m", "--entity-id", "e", "--tenant", "t", "--actor-id", "u"],
            {},
            1,
            "teleport",
        ),
        (["emit", "create", "--model", "m", "--entity-id", "e", "--tenant", "t"], {}, 1, "needs an id"),
        (
            ["emit", "create", "--model", "m", "--entity-id", "e", "--tenant", "t", "--actor-id", "u"],
            {"AUDIT_PRODUCER_PUBLISH_TIMEOUT_S": "-1"},
            2,
            "PUBLISH_TIMEOUT_S",
        ),
    ],
)
async def test_producer_cli_bad_input(
    isolated: Isolated, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    got, _, err = await _run("audit-producer", *args, env={**_producer_env(isolated), **env})
    assert got == code
    assert message.lower() in err.lower()


async def test_projector_cli_bad_input(isolated: Isolated) -> None:
    code, _, err = await _run("audit-projector", "run", env={"AUDIT_PROJECTOR_BATCH_MAX_RECORDS": "0"})
    assert code == 2
    assert "batch_max_records" in err.lower()
    code, _, err = await _run("audit-projector", "migrate", env={"AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": ""})
    assert code != 0
    code, _, err = await _run(
        "audit-projector", "migrate", "--dsn", isolated.stack.projector_dsn, "--schema", f"{isolated.name}_x"
    )
    assert code == 1
    assert "migration" in err.lower()


async def test_query_cli_refuses_a_placeholder_secret_in_production() -> None:
    code, _, err = await _run("audit-query", "serve", env={"AUDIT_QUERY_ENVIRONMENT": "production"})
    assert code == 2
    assert "cursor_secret" in err.lower()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["skip", "--topic", "nope", "--partition", "0", "--offset", "1", "--reason", "r"], 1, "not a projected topic"),
        (["skip", "--topic", "{audit}", "--partition", "0", "--offset", "1", "--reason", " "], 1, "needs a reason"),
        (["skip", "--topic", "{audit}", "--partition", "-1", "--offset", "1", "--reason", "r"], 2, "partition"),
        (["redrive"], 2, "choose what to redrive"),
        (["redrive", "--reason", "x", "--value-file", "{file}"], 1, "replaces one record"),
        (["redrive", "--topic", "{audit}", "--partition", "0", "--offset", "99"], 1, "no dead letter"),
    ],
)
async def test_operator_cli_bad_input(
    isolated: Isolated, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    value = tmp_path / "v.json"
    await asyncio.to_thread(value.write_text, "{}")
    filled = [a.format(audit=isolated.projector.audit_topic, file=value) for a in args]
    got, out, err = await _run("audit-projector", *filled, env=isolated.projector_env())
    assert got == code, out + err
    assert message in out + err


async def test_projector_key_commands_generate_and_publish_the_verifier_key(isolated: Isolated) -> None:
    code, out, err = await _run("audit-projector", "key", "--generate", env=isolated.projector_env())
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("PRIVATE+KEY+audit-trail+")
    published = err.replace("\n", "").split("(publish it):")[1].strip()
    assert published.startswith("audit-trail+")
    code, out, err = await _run(
        "audit-projector", "key", env={**isolated.projector_env(), "AUDIT_PROJECTOR_CHECKPOINT_KEY": secret}
    )
    assert code == 0, err
    assert out.strip() == published, "the verifier key of the configured signer"
    code, _, err = await _run(
        "audit-projector", "key", env={**isolated.projector_env(), "AUDIT_PROJECTOR_CHECKPOINT_KEY": "nope"}
    )
    assert code == 1
    assert "signing key" in err
