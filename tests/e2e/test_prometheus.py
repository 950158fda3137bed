"""The alert rules and the Grafana dashboard against a real Prometheus (Debian's): the rules check and pass their
unit tests, and with Prometheus scraping the running projector and query API every metric a rule or a panel names
is there, and every panel's query returns series."""

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import AnyHttpUrl, SecretStr

from audit_producer import AuditProducer
from audit_projector.config import WitnessConfig
from audit_schemas.checkpoint import NoteSigner, verifier_key_as
from tests.conftest import ROOT, Isolated, free_port, projector_running
from tests.history import record_history
from tests.polling import eventually
from tests.witness import Litewitness

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "audit-trail.json"


@pytest.fixture(scope="session")
def prometheus() -> tuple[str, str]:
    """Debian's prometheus and promtool, installed on first use when the suite runs as root (as CI does)."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            check=True,
            capture_output=True,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    server, tool = shutil.which("prometheus"), shutil.which("promtool")
    assert server, "Debian's prometheus package is required"
    assert tool, "Debian's prometheus package (promtool) is required"
    return server, tool


def test_the_rules_check_and_pass_their_unit_tests(prometheus: tuple[str, str]) -> None:
    _, promtool = prometheus
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _metric_names() -> list[str]:
    """Every metric the rules and the dashboard's panels name (ours all start `audit_`)."""
    panels = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    return sorted(set(re.findall(r"\baudit_[a-z_]+", RULES.read_text() + " " + panels)))


def _panel_expressions() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


@contextlib.asynccontextmanager
async def _serve_prometheus(binary: str, targets: dict[str, str], data: Path) -> AsyncIterator[str]:
    """Debian's prometheus on a free loopback port, scraping `targets` every second; its base URL."""
    port = free_port()
    config = data / "prometheus.yml"
    jobs = [
        {"job_name": name, "scrape_interval": "1s", "metrics_path": "/metrics", "static_configs": [{"targets": [t]}]}
        for name, t in targets.items()
    ]
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
    proc = await asyncio.create_subprocess_exec(
        binary, f"--config.file={config}", f"--storage.tsdb.path={data / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_every_metric_of_the_rules_and_dashboard_is_scraped_and_every_panel_returns_series(
    isolated: Isolated,
    audit: AuditProducer,
    api: httpx.AsyncClient,
    prometheus: tuple[str, str],
    tmp_path: Path,
    witnesses: list[Litewitness],
) -> None:
    signer, key = NoteSigner.generate("audit-trail")
    health = free_port()
    settings = isolated.projector.model_copy(
        update={
            "health_port": health,
            "probe_interval_s": 0.3,
            "checkpoint_key": SecretStr(key),
            "checkpoint_every_leaves": 5,
            "checkpoint_every_s": 0.5,
            "witnesses": [WitnessConfig(key=w.vkey, url=AnyHttpUrl(w.url)) for w in witnesses],
            "witness_interval_s": 0.3,
        }
    )
    for w in witnesses:  # witnesses as deployed: every origin of the log known to each
        for topic in settings.topics:
            for partition in range(settings.partitions):
                origin = f"{settings.log_name}/{topic}/{partition}"
                w.add_log(origin, verifier_key_as(signer.verifier_key, origin))
    names = _metric_names()
    assert len(names) >= 12, names
    async with projector_running(settings):
        await record_history(audit, isolated.stack.bootstrap)  # a dead letter, checkpoints, every topic busy
        for path in ("/v1/audit", "/v1/audit/stats", "/v1/audit/not-an-id"):
            await api.get(path)
        targets = {"projector": f"127.0.0.1:{health}", "query": api.base_url.netloc.decode()}
        async with (
            _serve_prometheus(prometheus[0], targets, tmp_path) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as prom,
        ):

            async def up() -> bool:
                try:
                    active = (await prom.get("/api/v1/targets")).json()["data"]["activeTargets"]
                except (httpx.TransportError, ValueError, KeyError):
                    return False
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            await eventually(up, within=30, interval=0.5)

            gone: list[str] = []

            async def all_scraped() -> bool:
                gone.clear()
                for name in names:
                    found = (await prom.get("/api/v1/series", params={"match[]": name})).json()["data"]
                    if not found:
                        gone.append(name)
                return not gone

            try:
                await eventually(all_scraped, within=30, interval=1)
            except AssertionError:
                raise AssertionError(f"never scraped: {gone}") from None
            for path in ("/v1/audit", "/v1/audit/count"):  # more traffic between two scrapes, for rate()
                await api.get(path)
            await asyncio.sleep(3)
            empty: list[str] = []
            for title, expr in _panel_expressions():
                answer: dict[str, Any] = (await prom.get("/api/v1/query", params={"query": expr})).json()
                assert answer["status"] == "success", (title, answer)
                if not answer["data"]["result"]:
                    empty.append(title)
            assert empty == [], f"panels without series: {empty}"
