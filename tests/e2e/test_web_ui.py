"""The web UI renders the audit log from the API in a real (headless) browser."""

import asyncio
import shutil
import subprocess
import tempfile
from typing import Any

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.browser]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed on first use when the suite runs as root (as CI does)."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True)
        found = shutil.which("chromium")
    assert found, "chromium is required for the web UI test"
    return found


async def test_ui_lists_entries_from_the_api(
    chromium: str, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    ids = []
    for action, user in (("create", Actor.user("u-ui", "Uma Interface")), ("sync", Actor.system("scheduler"))):
        async with audit.action(action, entity=Entity(id="ui-1", model="resource"), actor=user, tenant="acme") as act:
            ids.append(str(act.audit_id))

    async def projected() -> bool:
        return bool((await api.get("/v1/audit")).json()["count"] == 2)

    await eventually(projected)
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--dump-dom",
            f"{api.base_url}/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        dom, _ = await asyncio.wait_for(proc.communicate(), 90)
    html = dom.decode()
    for audit_id in ids:
        assert audit_id in html, "each entry's audit log id is rendered"
    assert "Uma Interface (u-ui)" in html
    assert "scheduler" in html
    assert html.count('class="entry"') == 2
