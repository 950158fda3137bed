"""The live trace view: server-sent events from a real uvicorn server, resumed with Last-Event-ID, none lost."""

import asyncio
import json
from typing import Any

import httpx
import pytest
import structlog

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from tests.conftest import Isolated, projector_running, query_client, query_server
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _read_events(response: httpx.Response, until: str, limit: int = 50) -> list[tuple[str, str | None, Any]]:
    """(event, id, data) of each event until one of kind `until` (included)."""
    out: list[tuple[str, str | None, Any]] = []
    kind, event_id, data = "message", None, None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("id: "):
            event_id = line.removeprefix("id: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
        elif line == "" and data is not None:
            out.append((kind, event_id, data))
            if kind == until or len(out) >= limit:
                return out
            kind, event_id, data = "message", None, None
    return out


async def test_a_running_action_streams_live_and_resumes_after_a_dropped_connection(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    go = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def action() -> None:
        async with audit.action(
            "execute", entity=Entity(id="job-1", model="integration"), actor=Actor.user("ada"), tenant="acme"
        ) as act:
            log.info("step 1")
            started.set_result(act.audit_id.hex)
            await go.wait()
            log.info("step 2", attempt=2)
            log.warning("step 3")

    async with projector_running(isolated.projector):
        running = asyncio.create_task(action())
        trace_id = await asyncio.wait_for(started, 10)
        url = f"/v1/traces/{trace_id}/stream"
        async with asyncio.timeout(30), api.stream("GET", url, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await _read_events(response, until="log")
        assert [(k, d.get("message") or d.get("event")) for k, _, d in first] == [
            ("entry", "execute"),
            ("log", "step 1"),
        ]
        assert first[0][2]["outcome"]["status"] == "in_progress"
        last_id = first[-1][1]
        assert last_id  # the connection drops here, after step 1

        go.set()
        await running
        async with (
            asyncio.timeout(30),
            api.stream("GET", url, headers={"last-event-id": last_id or ""}, timeout=30) as response,
        ):
            rest = await _read_events(response, until="end")
    kinds = [k for k, _, _ in rest]
    assert kinds.count("entry") == 0  # nothing repeated
    assert [d["message"] for k, _, d in rest if k == "log"] == ["step 2", "step 3"]  # nothing lost
    outcome = next(d for k, _, d in rest if k == "outcome")
    assert outcome["outcome"]["status"] == "succeeded"
    assert kinds[-1] == "end"


async def test_stream_ids_are_checked_and_a_browser_session_is_enough(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    async with projector_running(isolated.projector):
        async with audit.action(
            "sync", entity=Entity(id="r-1", model="resource"), actor=Actor.user("ada"), tenant="acme"
        ) as act:
            pass
        trace_id = act.audit_id.hex
        url = f"/v1/traces/{trace_id}/stream"
        forged = await api.get(url, headers={"last-event-id": "not-a-cursor"})
        assert forged.status_code == 400
        # An id from another trace's stream does not resume this one.
        async with api.stream("GET", url, timeout=30) as response:
            events = await _read_events(response, until="end")
        other = await api.get(f"/v1/traces/{'0' * 32}/stream", headers={"last-event-id": events[0][1] or ""})
        assert other.status_code == 400
        assert "different query" in other.json()["detail"]
        # The console's EventSource cannot send headers: its session cookie is its credential.
        token = await isolated.token(("audit:read",), tenants=("acme",))
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as browser:
            assert (await browser.get(url)).status_code == 401
            assert (await browser.post("/v1/session", json={"credential": token})).status_code == 200
            async with browser.stream("GET", url) as response:
                assert response.status_code == 200
                seen = await _read_events(response, until="end")
        assert [k for k, _, _ in seen] == ["entry", "outcome", "end"]
        # Another tenant's reader is told what an unknown id gets (after the grace period): nothing recorded.
        globex = await isolated.token(("audit:read",), tenants=("globex",))
        hidden = await api.get(url, headers={"authorization": f"Bearer {globex}"})
        unknown = await api.get(f"/v1/traces/{'0' * 32}/stream")
        assert (hidden.status_code, unknown.status_code) == (404, 404)
        assert hidden.json()["detail"] == f"nothing recorded for trace {trace_id}"
        # The dashed spelling (as the console's Audit Log ID column shows it) names the same trace.
        dashed = str(act.audit_id)
        view = await api.get(f"/v1/traces/{dashed}")
        assert view.status_code == 200
        assert view.json()["trace_id"] == trace_id
        async with api.stream("GET", f"/v1/traces/{dashed}/stream", timeout=30) as response:
            assert [k for k, _, _ in await _read_events(response, until="end")] == ["entry", "outcome", "end"]
        assert (await api.get(f"/v1/traces/{dashed.upper()}")).status_code == 422


async def test_open_streams_are_capped_per_credential(isolated: Isolated, audit: AuditProducer) -> None:
    settings = isolated.query.model_copy(update={"live_streams_per_credential": 2})
    token = await isolated.token(("audit:read",), tenants=("acme",))
    other = await isolated.token(("audit:read",), tenants=("acme",))
    release = asyncio.Event()

    def client(base: str, secret: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base, timeout=30, headers={"authorization": f"Bearer {secret}"})

    async with projector_running(isolated.projector), query_server(settings) as base, client(base, token) as mine:
        async with audit.action(
            "sync", entity=Entity(id="r-cap", model="resource"), actor=Actor.user("ada"), tenant="acme"
        ) as act:
            trace_id = act.audit_id.hex
            url = f"/v1/traces/{trace_id}/stream"
            await eventually(lambda: _entry_in(mine, trace_id), within=20)

            async def hold(opened: asyncio.Event) -> int:
                async with mine.stream("GET", url) as response:
                    opened.set()
                    await release.wait()
                    return response.status_code

            opened = [asyncio.Event(), asyncio.Event()]
            holders = [asyncio.create_task(hold(e)) for e in opened]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 10)
            third = await mine.get(url)
            assert third.status_code == 429
            assert third.headers["retry-after"] == "5"
            assert "2 open live streams" in third.json()["detail"]
            async with client(base, other) as theirs, theirs.stream("GET", url) as ok:
                assert ok.status_code == 200  # another credential has its own share
            release.set()
            assert await asyncio.gather(*holders) == [200, 200]
        async with mine.stream("GET", url) as again:
            assert again.status_code == 200  # the slots were released when the streams closed


async def _entry_in(client: httpx.AsyncClient, trace_id: str) -> bool:
    return (await client.get(f"/v1/traces/{trace_id}")).status_code == 200


async def test_trace_and_entry_views_cap_their_log_lines(isolated: Isolated, audit: AuditProducer) -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    async with projector_running(isolated.projector):
        async with audit.action(
            "sync", entity=Entity(id="chatty", model="resource"), actor=Actor.user("ada"), tenant="acme"
        ) as act:
            for n in range(7):
                log.info("line", n=n)
        settings = isolated.query.model_copy(update={"max_logs": 5})
        token = await isolated.token()
        async with query_client(settings, token) as client:

            async def all_lines() -> Any:
                body = (await client.get(f"/v1/traces/{act.audit_id.hex}")).json()
                return body if body.get("logs_truncated") else None

            trace = await eventually(all_lines, within=30)
            entry = (await client.get(f"/v1/audit/{act.audit_id}")).json()
    assert [line["fields"]["n"] for line in trace["logs"]] == [0, 1, 2, 3, 4]
    assert trace["entry"]["audit_id"] == str(act.audit_id)
    assert entry["logs"] == trace["logs"]
    assert entry["logs_truncated"] is True


async def test_the_trace_view_pages_its_log_lines_without_skipping_or_repeating(
    isolated: Isolated, audit: AuditProducer
) -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    async with projector_running(isolated.projector):
        async with audit.action(
            "sync", entity=Entity(id="chatty", model="resource"), actor=Actor.user("ada"), tenant="acme"
        ) as act:
            for n in range(11):
                log.info("line", n=n)
        async with audit.action("sync", entity=Entity(id="other", model="resource"), actor=Actor.user("ada"),
                                tenant="acme") as other:  # fmt: skip
            log.info("elsewhere")
        settings = isolated.query.model_copy(update={"trace_page": 4})
        async with query_client(settings, await isolated.token()) as client:
            path = f"/v1/traces/{act.audit_id.hex}"

            async def projected() -> Any:
                body = (await client.get(path, params={"logs_limit": 100})).json()
                return body if len(body.get("logs", [])) == 11 else None

            await eventually(projected, within=30)
            seen: list[int] = []
            params: dict[str, Any] = {}
            pages = 0
            for _ in range(10):
                response = await client.get(path, params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                pages += 1
                seen += [line["fields"]["n"] for line in page["logs"]]
                if page["logs_next"] is None:
                    assert page["logs_truncated"] is False
                    break
                assert page["logs_truncated"] is True
                params = {"logs_after": page["logs_next"]}
            assert seen == list(range(11))  # every line once, in order
            assert pages == 3
            first = (await client.get(path)).json()
            # A page cursor continues only its own trace, for the same caller; a forged one is refused.
            moved = await client.get(f"/v1/traces/{other.audit_id.hex}", params={"logs_after": first["logs_next"]})
            forged = await client.get(path, params={"logs_after": first["logs_next"][:-2] + "AA"})
    assert moved.status_code == 400
    assert forged.status_code == 400
    assert "error" in forged.json() or "detail" in forged.json()
