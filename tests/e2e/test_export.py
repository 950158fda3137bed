"""`GET /v1/audit/export`: CSV and NDJSON of any view, streamed with flat memory, recorded, verifiable."""

import contextlib
import csv
import hashlib
import io
import json
import tracemalloc
from typing import Any

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity
from tests.conftest import Isolated, projector_running
from tests.e2e.test_search import all_entries, seed_history
from tests.factories import publish_events
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def verify_ndjson(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The export's header and entries, after checking its trailer (count and SHA-256 of what precedes it)."""
    lines = body.split(b"\n")
    assert lines[-1] == b"", "an export ends with a newline"
    *content, trailer_line = lines[:-1]
    trailer = json.loads(trailer_line)
    if trailer.get("type") != "trailer":
        raise ValueError("truncated: no trailer")
    records = [json.loads(line) for line in content]
    if trailer["count"] != len(records) - 1:
        raise ValueError("truncated: row count differs")
    if hashlib.sha256(b"".join(line + b"\n" for line in content)).hexdigest() != trailer["sha256"]:
        raise ValueError("altered: checksum differs")
    header, *entries = records
    assert header["type"] == "export"
    assert all(e.pop("type") == "entry" for e in entries)
    return header, entries


async def test_ndjson_and_csv_round_trip_a_filtered_view(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    async with projector_running(isolated.projector):
        await seed_history(isolated, audit)
        # Values a spreadsheet would run as formulas.
        async with audit.action(
            "create",
            entity=Entity(id='=HYPERLINK("http://evil","x")', model="invoice"),
            actor=Actor.user("+mallory", "@SUM(A1)"),
            tenant="acme",
        ):
            pass

        async def everything() -> list[dict[str, Any]] | None:
            found = await all_entries(api)
            return found if len(found) == 12 else None

        await eventually(everything, within=30)
        view = {"q": "tenant:acme -action:sync", "sort": "user", "order": "asc"}
        listed = await all_entries(api, **view)
        response = await api.get("/v1/audit/export", params={**view, "format": "ndjson"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-ndjson"
        header, entries = verify_ndjson(response.content)
        assert header["filters"]["terms"][0] == {"field": "tenant", "values": ["acme"], "negated": False}
        assert header["sort"] == "user"
        assert [e["audit_id"] for e in entries] == [e["audit_id"] for e in listed]
        assert entries == listed  # the same entries, in the same order, as the paged API
        # A truncated or altered download does not verify.
        with pytest.raises(ValueError, match="truncated"):
            verify_ndjson(response.content[: response.content.rindex(b"\n", 0, -1) + 1])
        cut = response.content.split(b"\n")
        with pytest.raises(ValueError, match="truncated"):
            verify_ndjson(b"\n".join(cut[:2] + cut[3:]))
        with pytest.raises(ValueError, match="altered"):
            verify_ndjson(response.content.replace(b'"acme"', b'"acmx"', 1))

        response = await api.get("/v1/audit/export", params={**view, "format": "csv"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0][0].startswith("# audit export ")
        assert json.loads(rows[0][0].removeprefix("# audit export "))["filters"]["terms"]
        assert rows[1][:7] == ["time", "user", "user_name", "user_type", "event", "entity_id", "model"]
        assert [r[7] for r in rows[2:]] == [e["audit_id"] for e in listed]
        evil = next(r for r in rows[2:] if "HYPERLINK" in r[5])
        assert evil[5] == '\'=HYPERLINK("http://evil","x")'
        assert evil[1] == "'+mallory"
        assert evil[2] == "'@SUM(A1)"
        assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows[1:] for cell in row)

        # Each export is itself an audit entry, in the API's own tenant.
        export_id = response.headers["x-audit-export-id"]

        async def recorded() -> list[dict[str, Any]] | None:
            found = await all_entries(api, q=f"model:audit_export entity:{export_id} outcome:succeeded")
            return found or None

        (entry,) = await eventually(recorded, within=30)
    assert entry["tenant_id"] == "platform"
    assert entry["event"] == "execute"
    assert entry["outcome"]["changes"]["format"]["after"] == "csv"


async def test_export_needs_the_export_scope_and_a_valid_query(isolated: Isolated, api: httpx.AsyncClient) -> None:
    reader = await isolated.token(("audit:read",))
    response = await api.get("/v1/audit/export", headers={"authorization": f"Bearer {reader}"})
    assert response.status_code == 403
    assert "audit:export" in response.json()["detail"]
    response = await api.get("/v1/audit/export", params={"q": "colour:red"})
    assert response.status_code == 400
    assert "position 1" in response.json()["detail"]
    response = await api.get("/v1/audit/export", params={"format": "xlsx"})
    assert response.status_code in (400, 422)


async def _peak_while_exporting(api: httpx.AsyncClient, params: dict[str, str]) -> tuple[int, int]:
    """Rows exported and the peak of Python memory allocated (server and client, one process) meanwhile."""
    tracemalloc.start()
    try:
        rows = 0
        async with api.stream("GET", "/v1/audit/export", params=params, timeout=120) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                rows += line.startswith('{"type":"entry"')
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return rows, peak


async def test_export_memory_stays_flat_as_the_view_grows(isolated: Isolated, api: httpx.AsyncClient) -> None:
    total = 12_000
    async with projector_running(isolated.projector):
        await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, total, entities=40)

        async def projected() -> bool:
            async with isolated.owner() as conn:
                return bool(await conn.fetchval("SELECT count(*) FROM audit_entries") == total)

        await eventually(projected, within=90)
    assert (await api.get("/v1/audit/count")).json() == {"count": 10_000, "exact": False}
    assert (await api.get("/v1/audit/count", params={"q": "entity:e-1 entity:e-2"})).json() == {
        "count": 600,
        "exact": True,
    }
    with contextlib.suppress(Exception):
        await _peak_while_exporting(api, {"q": "entity:e-1"})  # warm up: imports and the pool's first connection
    small_rows, small_peak = await _peak_while_exporting(api, {"q": "entity:e-1 entity:e-2 entity:e-3"})
    large_rows, large_peak = await _peak_while_exporting(api, {})
    assert small_rows == 900
    assert large_rows == total
    # 13x the rows (~8 MB of NDJSON) may not cost 13x the memory: the peak stays within a bound of the small one's.
    assert large_peak < small_peak * 1.5 + 2_000_000, (small_peak, large_peak)
