"""`GET /v1/audit?q=`: the search language against the real read model, checked against a brute-force filter."""

import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from audit_producer import Actor, AuditProducer, Entity
from audit_schemas import encode
from tests.conftest import Isolated, projector_running
from tests.factories import action_event, send_raw
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

Entry = dict[str, Any]

ACTORS = (
    Actor.user("alice", "Alice Smith"),
    Actor.user("bob", "Bob Jones"),
    Actor.service_account("ci-bot", "CI"),
    Actor.system("scheduler"),
)


async def seed_history(isolated: Isolated, audit: AuditProducer) -> None:
    """Varied history: two tenants, four actors, two models, succeeded/failed, and one action still running."""
    plan = [
        ("acme", "create", "invoice", "inv-1", 0, False),
        ("acme", "update", "invoice", "inv-1", 1, False),
        ("acme", "approve", "invoice", "inv-1", 0, True),
        ("acme", "delete", "invoice", "inv-20", 1, False),
        ("acme", "sync", "resource", "res-1", 2, False),
        ("acme", "sync", "resource", "res-1", 3, True),
        ("globex", "create", "invoice", "inv-1", 1, False),
        ("globex", "approve", "invoice", "inv-3", 0, False),
        ("globex", "execute", "resource", "res_%", 2, True),
        ("globex", "reject", "invoice", "inv-3", 3, False),
    ]
    for tenant, action, model, entity, actor, fails in plan:
        with contextlib.suppress(RuntimeError):
            async with audit.action(action, entity=Entity(id=entity, model=model), actor=ACTORS[actor], tenant=tenant):
                if fails:
                    raise RuntimeError("refused by the payment provider")
    running = action_event("res-9", action="retry", tenant="acme")  # a start without its outcome
    await send_raw(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(running), 0)])


async def all_entries(api: httpx.AsyncClient, **params: Any) -> list[Entry]:
    """Every entry of a query, page by page (small pages, so cursors carry the search)."""
    entries: list[Entry] = []
    cursor = None
    for _ in range(100):
        response = await api.get("/v1/audit", params={**params, "limit": 3, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        entries += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("more pages than expected")


def _text(e: Entry, word: str) -> bool:
    fields = (e["user"]["id"], e["user"]["display_name"], e["entity"]["id"], e["entity"]["model"], e["source"])
    return any(word.lower() in (f or "").lower() for f in fields)


CASES: list[tuple[str, Callable[[Entry], bool]]] = [
    ("action:approve", lambda e: e["event"] == "approve"),
    ("action:approve action:reject", lambda e: e["event"] in ("approve", "reject")),
    ("-action:sync", lambda e: e["event"] != "sync"),
    ("user:alice model:invoice", lambda e: e["user"]["id"] == "alice" and e["entity"]["model"] == "invoice"),
    ("-user:alice", lambda e: e["user"]["id"] != "alice"),  # system actions (no user id) are kept
    ("actor:system", lambda e: e["user"]["type"] == "system"),
    ("outcome:failed", lambda e: e["outcome"]["status"] == "failed"),
    ("outcome:in_progress", lambda e: e["outcome"]["status"] in ("in_progress", "unknown")),
    ("-outcome:succeeded tenant:acme", lambda e: e["outcome"]["status"] != "succeeded" and e["tenant_id"] == "acme"),
    ("entity:inv-1", lambda e: e["entity"]["id"] == "inv-1"),
    ("entity:inv-*", lambda e: e["entity"]["id"].startswith("inv-")),
    ("entity:inv-2*", lambda e: e["entity"]["id"].startswith("inv-2")),
    ('"alice smith"', lambda e: _text(e, "alice smith")),
    ("smith -invoice", lambda e: _text(e, "smith") and not _text(e, "invoice")),
    ("res_%", lambda e: _text(e, "res_%")),  # LIKE's wildcards are matched literally
    (
        "jones action:create tenant:globex",
        lambda e: _text(e, "jones") and e["event"] == "create" and e["tenant_id"] == "globex",
    ),
    ("after:2000-01-01 before:2100-01-01", lambda e: True),
    ("before:2000-01-01", lambda e: False),
]


async def test_every_query_matches_a_brute_force_filter_of_the_same_history(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    async with projector_running(isolated.projector):
        await seed_history(isolated, audit)

        async def everything() -> list[Entry] | None:
            found = await all_entries(api)
            return found if len(found) == 11 else None

        history = await eventually(everything, within=30)
    for query, keep in CASES:
        expected = sorted(e["audit_id"] for e in history if keep(e))
        got = sorted(e["audit_id"] for e in await all_entries(api, q=query))
        assert got == expected, query
    assert len(await all_entries(api, q="action:approve", tenant="acme")) == 1  # combined with the other parameters
    for query in ("tenant:acme", "-action:sync", "outcome:failed"):
        counted = (await api.get("/v1/audit/count", params={"q": query})).json()
        assert counted == {"count": len(await all_entries(api, q=query)), "exact": True}
    assert (await api.get("/v1/audit/count")).json() == {"count": len(history), "exact": True}
    # Forward then back again, page by page: the same pages, nothing skipped or repeated.
    for sort, order in (("time", "desc"), ("user", "asc"), ("event", "desc")):
        params: dict[str, Any] = {"sort": sort, "order": order, "limit": 4}
        pages, cursor = [], None
        while True:
            body = (await api.get("/v1/audit", params={**params, **({"cursor": cursor} if cursor else {})})).json()
            pages.append(([e["audit_id"] for e in body["data"]], body["prev_cursor"]))
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages[0][1] is None  # no page before the first
        flat = [i for ids, _ in pages for i in ids]
        assert len(flat) == len(set(flat)) == len(history)
        back = pages[-1][1]
        for expected, _ in reversed(pages[:-1]):
            body = (await api.get("/v1/audit", params={**params, "cursor": back})).json()
            assert [e["audit_id"] for e in body["data"]] == expected, (sort, order)
            back = body["prev_cursor"]
        assert back is None
    # A query's cursor does not continue another query.
    first = (await api.get("/v1/audit", params={"q": "tenant:acme", "limit": 1})).json()
    other = await api.get("/v1/audit", params={"q": "tenant:globex", "limit": 1, "cursor": first["next_cursor"]})
    assert other.status_code == 400


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("action:approve colour:red", "unknown field `colour:` at position 16"),
        ('user:"alice', "unterminated quote at position 6"),
        ("after:yesterday", "`yesterday` at position 7 is not a date"),
        ("x" * 1001, "at most 1000 characters"),
    ],
)
async def test_a_bad_query_is_a_400_naming_the_position(
    isolated: Isolated, api: httpx.AsyncClient, query: str, message: str
) -> None:
    response = await api.get("/v1/audit", params={"q": query})
    assert response.status_code in (400, 422), response.text
    assert message in response.text
