"""Hostile and careless HTTP input: every answer is a 4xx JSON body with a message, never a 500."""

from typing import Any

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity
from audit_query.cursor import Cursor, CursorCodec, scope_of
from tests.conftest import Isolated
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/v1/audit?tenant=%00", 400, "NUL"),
        ("/v1/audit?user_id=a%00b", 400, "NUL"),
        ("/v1/audit?tenant=%ff%fe", 400, "UTF-8"),
        ("/v1/entities/resource/a%00b/audit", 400, "NUL"),
        ("/v1/audit?until=9999-12-31T23:59:59-05:00", 422, "UTC"),
        ("/v1/audit?since=0001-01-01T00:00:00%2B01:00", 422, "UTC"),
        ("/v1/audit?until=0", 422, "ISO 8601"),
        ("/v1/audit?since=1700000000", 422, "ISO 8601"),
        ("/v1/audit?tenant=a&tenant=b", 400, "more than once"),
        ("/v1/audit?limit=5&limit=6", 400, "more than once"),
        ("/v1/audit?cursor=%00", 400, "NUL"),
        ("/v1/audit/not-a-uuid", 422, "uuid"),
        ("/v1/traces/XYZ", 422, "pattern"),
        ("/v1/nothing-here", 404, "Not Found"),
    ],
)
async def test_hostile_input_gets_a_json_4xx(api: httpx.AsyncClient, url: str, status: int, words: str) -> None:
    response = await api.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert words.lower() in response.text.lower()


async def test_a_repeated_event_filter_is_allowed(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/audit?event=create&event=update")).status_code == 200


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("time", ["not-a-time", "0190a0e0-0000-7000-8000-000000000000"]),
        ("time", ["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
        ("user", ["0ada", "2026-01-01T00:00:00+00:00"]),
        ("time", [1, 2]),
        ("event", ["create\x00", "2026-01-01T00:00:00+00:00", "0190a0e0-0000-7000-8000-000000000000"]),
    ],
)
async def test_a_signed_cursor_of_the_wrong_shape_is_a_400(
    isolated: Isolated, api: httpx.AsyncClient, sort: str, key: list[Any]
) -> None:
    """Whoever holds the signing key (the built-in one in development) can sign anything: shapes are checked."""
    codec = CursorCodec(isolated.query.cursor_secret.get_secret_value().encode())
    filters: dict[str, Any] = {
        "tenant": None, "actions": [], "user_id": None, "actor_type": None, "model": None, "entity_id": None,
        "correlation_id": None, "since": None, "until": None,
    }  # fmt: skip
    scope = scope_of(view="audit", sort=sort, order="desc", filters=filters, tenants="*")
    token = codec.encode(Cursor(scope, tuple(key)))
    response = await api.get("/v1/audit", params={"sort": sort, "cursor": token})
    assert response.status_code == 400, response.text
    assert "cursor" in response.json()["detail"]


async def test_entity_ids_with_slashes_have_a_history(
    audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    async with audit.action(
        "sync", entity=Entity(id="repo/org/name", model="integration"), actor=Actor.system(), tenant="acme"
    ):
        pass

    async def found() -> dict[str, Any] | None:
        response = await api.get("/v1/entities/integration/repo/org/name/audit")
        return response.json() if response.status_code == 200 else None

    body = await eventually(found)
    assert body["data"][0]["entity"]["id"] == "repo/org/name"
    encoded = await api.get("/v1/entities/integration/repo%2Forg%2Fname/audit")
    assert encoded.status_code == 200


async def test_the_openapi_document_lists_every_status(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    for path in (
        "/v1/audit",
        "/v1/audit/{audit_id}",
        "/v1/entities/{model}/{entity_id}/audit",
        "/v1/traces/{trace_id}",
    ):
        statuses = set(spec["paths"][path]["get"]["responses"])
        assert {"200", "400", "401", "403", "404", "422", "503"} <= statuses, (path, statuses)


async def test_every_proof_field_is_described_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    schemas = (await api.get("/openapi.json")).json()["components"]["schemas"]
    for name in ("InclusionProof", "ConsistencyProof", "CheckpointPublic", "KeyPublic"):
        properties = schemas[name]["properties"]
        undescribed = [field for field, spec in properties.items() if not spec.get("description")]
        assert undescribed == [], f"{name}: {undescribed}"
    assert "Merkle leaves" in schemas["InclusionProof"]["properties"]["leaf_data"]["description"]


async def test_audit_data_is_never_cached_and_the_console_has_an_icon(api: httpx.AsyncClient) -> None:
    """Every API answer and console page is `no-store` (Back after sign-out shows nothing from a cache); static
    assets may be cached; the icon is served (no 404 on every page)."""
    for path in ("/v1/audit", "/v1/audit/count", "/", "/login", "/entities", f"/traces/{'0' * 32}"):
        response = await api.get(path)
        assert response.headers.get("cache-control") == "no-store", path
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        refused = await anonymous.get("/v1/audit")
        assert refused.status_code == 401
        assert refused.headers["cache-control"] == "no-store"
    assert (await api.get("/static/console.css")).headers.get("cache-control") != "no-store"
    icon = await api.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.content
    assert 'rel="icon"' in (await api.get("/")).text
