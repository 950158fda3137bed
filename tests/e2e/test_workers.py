"""`audit-query serve --workers 3`: a session opened on one worker holds on the others, a live tail dropped and
resumed with `Last-Event-ID` on another connection loses and repeats nothing, cursors page across workers, and
`/metrics` adds up every worker's requests."""

import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from tests.conftest import Isolated, free_port, projector_running
from tests.e2e.test_live_trace import _read_events
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@contextlib.asynccontextmanager
async def _serve(isolated: Isolated, workers: int, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """`audit-query serve --workers N` as its own process on a free loopback port: its URL and pid."""
    port = free_port()
    env = {
        **isolated.query_env(),
        "AUDIT_QUERY_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 — started once, waited for by polling its port
        [str(Path(sys.executable).parent / "audit-query"), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def serving() -> bool:
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"{base}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(serving, within=60, interval=0.3)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def _fresh(base: str, path: str, cookies: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    """One request on its own connection, so the kernel may hand it to any worker."""
    async with httpx.AsyncClient(base_url=base, timeout=30, cookies=cookies) as c:
        return await c.get(path, **kw)


async def test_three_workers_share_sessions_live_tails_cursors_and_metrics(
    isolated: Isolated, audit: AuditProducer, tmp_path: Path
) -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    async with projector_running(isolated.projector):
        ids = []
        for i in range(5):
            async with audit.action(
                "sync", entity=Entity(id=f"w-{i}", model="resource"), actor=Actor.user("u-w"), tenant="acme"
            ) as act:
                for n in range(4):
                    log.info("line", n=n)
            ids.append(act.audit_id)
        token = await isolated.token(("audit:read",), tenants=("acme",))
        async with _serve(isolated, 3, tmp_path) as (base, pid):
            workers = await eventually(lambda: _three(pid), within=30)
            assert len(workers) >= 3  # three workers (and multiprocessing's resource tracker)

            # A session opened once holds on whichever worker answers.
            async with httpx.AsyncClient(base_url=base) as c:
                opened = await c.post("/v1/session", json={"credential": token})
                assert opened.status_code == 200
                cookie = opened.cookies["audit_session"]
            answers = [await _fresh(base, "/v1/session", cookies={"audit_session": cookie}) for _ in range(30)]
            assert {a.status_code for a in answers} == {200}

            # Paging: a cursor signed by one worker is accepted by the others.
            bearer = {"authorization": f"Bearer {token}"}

            async def everything() -> list[str] | None:
                seen, cursor = [], None
                for _ in range(10):
                    params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
                    page = (await _fresh(base, "/v1/audit", params=params, headers=bearer)).json()
                    seen += [e["audit_id"] for e in page["data"]]
                    cursor = page.get("next_cursor")
                    if not cursor:
                        break
                return seen if len(seen) == 5 else None

            listed = await eventually(everything, within=30)
            assert sorted(listed) == sorted(str(i) for i in ids)

            # A live tail dropped after two events resumes on a new connection without loss or repeats.
            trace = ids[-1].hex
            async with (
                httpx.AsyncClient(base_url=base, timeout=30, headers=bearer) as c,
                c.stream("GET", f"/v1/traces/{trace}/stream") as first,
            ):
                got = await _read_events(first, until="end", limit=2)
            last_id = got[-1][1]
            async with (
                httpx.AsyncClient(base_url=base, timeout=30, headers=bearer) as c,
                c.stream("GET", f"/v1/traces/{trace}/stream", headers={"last-event-id": last_id or ""}) as rest,
            ):
                more = await _read_events(rest, until="end")
            kinds = [k for k, _, _ in got + more]
            assert kinds[0] == "entry"
            assert kinds[-1] == "end"
            assert sorted(kinds) == ["end", "entry", "log", "log", "log", "log", "outcome"], kinds  # each once
            lines = [d["fields"]["n"] for k, _, d in got + more if k == "log"]
            assert lines == [0, 1, 2, 3]

            # /metrics adds up the requests every worker answered.
            text = (await _fresh(base, "/metrics")).text
            counted = re.search(
                r'audit_query_request_duration_seconds_count\{method="GET",route="/v1/session",status="200"\} (\S+)',
                text,
            )
            assert counted is not None, text[:2000]
            assert float(counted.group(1)) >= 30


async def _three(pid: int) -> list[int] | None:
    children = _children(pid)
    return children if len(children) >= 3 else None
