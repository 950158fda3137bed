"""The console in headless Chromium: filter, sort, page, search, chart, entities and their Activity, live trace,
export — everything a person does, against the real API, projector, Kafka and PostgreSQL. Screenshots are kept."""

import asyncio
import csv
import dataclasses
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import structlog
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from tests.conftest import Isolated, projector_running
from tests.e2e.test_search import all_entries, seed_history
from tests.e2e.test_web_ui import ARTIFACTS, _browser
from tests.factories import publish_events
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.browser]


def _who(entry: dict[str, Any]) -> str:
    """The User column as the console writes it."""
    user = entry["user"]
    if user["type"] == "system":
        return f"System ({user['id']})" if user["id"] else "System"
    return f"{user['display_name']} ({user['id']})" if user["display_name"] else str(user["id"])


def _local_time(iso: str) -> str:
    """The Time column as the browser (en-US, UTC here) writes it."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%-m/%-d/%Y, %-I:%M:%S %p")


class Console:
    """One signed-in browser, driven from a thread (Selenium blocks)."""

    def __init__(self, chromedriver: str, base: str) -> None:
        self.base = base
        self.browser: WebDriver = _browser(chromedriver)
        self.wait = WebDriverWait(self.browser, 30)

    def run(self, step: Callable[["Console"], Any]) -> "asyncio.Future[Any]":
        return asyncio.ensure_future(asyncio.to_thread(step, self))

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.browser.save_screenshot(str(ARTIFACTS / f"console-{name}.png"))

    def sign_in(self, token: str) -> None:
        self.browser.get(f"{self.base}/login")
        self.browser.find_element(By.ID, "credential").send_keys(token)
        self.browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        self.wait.until(expected_conditions.url_to_be(f"{self.base}/"))

    def rows(self) -> list[list[str]]:
        """The table's cells, read in one go (the page may be replacing them)."""
        cells: list[list[str]] = self.browser.execute_script(
            "return [...document.querySelectorAll('#rows tr')].map(tr => [...tr.cells].map(td => td.innerText))"
        )
        return cells

    def settled(self) -> None:
        """The table answered (no loading state)."""
        self.wait.until(lambda b: "Loading" not in b.find_element(By.ID, "status").text)

    def state(self) -> dict[str, list[str]]:
        return parse_qs(urlparse(self.browser.current_url).query)

    def wait_state(self, **expected: str) -> None:
        """Until the URL holds these view parameters."""
        self.wait.until(lambda b: all(self.state().get(k) == [v] for k, v in expected.items()))


def _audit_log(c: Console) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c.browser.get(f"{c.base}/")
    c.settled()
    c.wait.until(lambda b: len(c.rows()) == 50)
    out["total"] = c.browser.find_element(By.ID, "total").text
    first = c.rows()
    c.wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart rect.bar"))
    c.shot("audit-log")
    # Page forward and back: never a skipped or repeated row.
    c.browser.find_element(By.ID, "next").click()
    c.wait.until(lambda b: c.rows() and c.rows()[0] != first[0])
    second = c.rows()
    c.browser.find_element(By.ID, "prev").click()
    c.wait.until(lambda b: c.rows() == first)
    out["pages"] = (first, second)
    # By keyboard: "n" pages forward, "p" back, "/" reaches the search box; ↓ and Enter open the second row.
    body = c.browser.find_element(By.TAG_NAME, "body")
    body.send_keys("n")
    c.wait.until(lambda b: c.rows() == second)
    body.send_keys("p")
    c.wait.until(lambda b: c.rows() == first)
    body.send_keys("/")
    out["slash_focus"] = c.browser.switch_to.active_element.get_attribute("id")
    rows = c.browser.find_elements(By.CSS_SELECTOR, "#rows tr")
    rows[0].send_keys(Keys.ARROW_DOWN)
    out["down_focus"] = c.browser.switch_to.active_element.get_attribute("data-audit-id")
    c.browser.switch_to.active_element.send_keys(Keys.ENTER)
    c.wait.until(lambda b: "/traces/" in b.current_url)
    out["opened"] = c.browser.current_url
    c.browser.back()
    c.settled()
    c.wait.until(lambda b: c.rows() == first)
    # The event control.
    Select(c.browser.find_element(By.ID, "f-event")).select_by_value("approve")
    c.browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    c.wait.until(lambda b: c.state().get("event") == ["approve"])
    c.settled()
    out["approve"] = c.rows()
    # Every other control, one at a time.
    for control, value, key in (
        ("f-user", "bob", "user_id"),
        ("f-model", "invoice", "model"),
        ("f-entity", "inv-3", "entity_id"),
        ("f-outcome", "failed", "outcome"),
        ("f-range", "hour", "range"),
    ):
        c.browser.find_element(By.ID, "reset").click()
        c.wait.until(lambda b: not c.state())
        c.settled()
        field = c.browser.find_element(By.ID, control)
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.send_keys(value)
        c.browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        c.wait_state(**{key: value})
        c.settled()
        out[key] = c.rows()
    # Each sortable column, both ways.
    c.browser.find_element(By.ID, "reset").click()
    c.settled()
    for column, first_order in (("user", "asc"), ("event", "asc"), ("time", "desc")):
        for order in (first_order, "desc" if first_order == "asc" else "asc"):
            c.browser.find_element(By.CSS_SELECTOR, f"button.sort[data-sort={column}]").click()
            c.wait_state(sort=column, order=order)
            c.settled()
            out[f"{column}_{order}"] = [r[:3] for r in c.rows()]
    # The search language, and a syntax error shown as it is.
    box = c.browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("action:approve tenant:globex")
    c.browser.find_element(By.CSS_SELECTOR, "#search button").click()
    c.wait.until(lambda b: c.state().get("q") == ["action:approve tenant:globex"])
    c.settled()
    out["search"] = c.rows()
    box = c.browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("action:approve colour:red")
    c.browser.find_element(By.CSS_SELECTOR, "#search button").click()
    c.wait.until(lambda b: "position 16" in b.find_element(By.ID, "status").text)
    out["error"] = c.browser.find_element(By.ID, "status").text
    c.shot("search-error")
    # A shared URL reloads the same view.
    c.browser.get(f"{c.base}/?q=action%3Areject")
    c.settled()
    out["reloaded"] = c.rows()
    # A chart bar narrows the table to its bucket.
    c.browser.get(f"{c.base}/")
    c.settled()
    bar = c.wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart rect.bar"))[-1]
    c.browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", bar)
    c.wait.until(lambda b: c.state().get("range") == ["custom"])
    c.settled()
    out["bar_state"] = c.state()
    out["bar_rows"] = len(c.rows())
    return out


def _entities(c: Console) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c.browser.find_element(By.CSS_SELECTOR, "a[data-nav=entities]").click()
    c.wait.until(lambda b: "invoice (" in b.find_element(By.ID, "models").text)
    c.browser.find_element(By.ID, "e-prefix").send_keys("inv-")
    c.browser.find_element(By.CSS_SELECTOR, "#entity-search button").click()
    c.wait_state(prefix="inv-")
    c.settled()
    c.wait.until(lambda b: "invoice/inv-1" in b.find_element(By.ID, "entity-list").text)
    out["found"] = c.browser.execute_script(
        "return [...document.querySelectorAll('#entity-list li')].map(li => li.innerText)"
    )
    c.shot("entities")
    c.browser.find_element(By.LINK_TEXT, "invoice/inv-1").click()
    c.wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#activity > li")) >= 3)
    items = c.browser.find_elements(By.CSS_SELECTOR, "#activity > li")
    out["activity"] = [i.find_element(By.TAG_NAME, "summary").text for i in items]
    # The latest update (log order), the one with a change set and execution logs.
    updated = [i for i in items if " update " in i.find_element(By.TAG_NAME, "summary").text][-1]
    updated.find_element(By.TAG_NAME, "summary").click()
    c.wait.until(lambda b: updated.find_elements(By.CSS_SELECTOR, "table.diff"))
    out["diff"] = updated.find_element(By.CSS_SELECTOR, "table.diff").text
    # Log lines come a page at a time (one line here): the button fetches the next page until none is left.
    out["first_page"] = updated.find_element(By.CSS_SELECTOR, "table.logs").text
    more = updated.find_element(By.CSS_SELECTOR, "button.more")
    more.click()
    c.wait.until(lambda b: not more.is_displayed())
    out["logs"] = updated.find_element(By.CSS_SELECTOR, "table.logs").text
    out["log_classes"] = [
        r.get_attribute("class") for r in updated.find_elements(By.CSS_SELECTOR, "table.logs tr[data-log-id]")
    ]
    c.shot("entity-activity")
    # Within one tenant (as the table's and the trace view's links open it): acme and globex each have an inv-1.
    for tenant in ("acme", "globex", "initech"):
        c.browser.get(f"{c.base}/entities/invoice/inv-1?tenant={tenant}")
        c.settled()
        title = f"in tenant {tenant}"
        c.wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "entity-title"), title))
        summaries = [i.text for i in c.browser.find_elements(By.CSS_SELECTOR, "#activity > li summary")]
        out[f"in_{tenant}"] = (summaries, c.browser.find_element(By.ID, "status").text)
    return out


@pytest.fixture
def isolated(isolated: Isolated) -> Isolated:
    """This module's schema and topics, with the API's trace pages cut to one log line (so the console pages)."""
    return dataclasses.replace(isolated, query=isolated.query.model_copy(update={"trace_page": 1}))


async def test_the_console_end_to_end(
    chromedriver: str, isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient
) -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    async with projector_running(isolated.projector):
        await seed_history(isolated, audit)
        async with audit.action(
            "update",
            entity=Entity(id="inv-1", model="invoice"),
            actor=Actor.user("alice", "Alice Smith"),
            tenant="acme",
        ) as act:
            act.change("amount", 100, 120)
            log.info("recalculated", lines=3)
            log.error("tax service slow")
        await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, 60, entities=7)

        async def everything() -> list[dict[str, Any]] | None:
            found = await all_entries(api)
            return found if len(found) == 72 else None

        history = await eventually(everything, within=60)
        token = await isolated.token(("audit:read", "audit:export"))
        sorted_views = {
            f"{sort}_{order}": [
                [_local_time(e["time"]), _who(e), e["event"]]
                for e in (await all_entries(api, sort=sort, order=order))[:50]
            ]
            for sort in ("user", "event", "time")
            for order in ("asc", "desc")
        }
        console = Console(chromedriver, str(api.base_url))
        try:
            await console.run(lambda c: c.sign_in(token))
            seen = await console.run(_audit_log)
            entities = await console.run(_entities)

            # The live trace view: an action still running shows new lines as they are projected.
            go = asyncio.Event()
            started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def running() -> None:
                async with audit.action(
                    "execute", entity=Entity(id="job-7", model="integration"), actor=Actor.user("ada"), tenant="acme"
                ) as job:
                    log.info("step 1")
                    started.set_result(job.audit_id.hex)
                    await go.wait()
                    log.warning("step 2")

            task = asyncio.create_task(running())
            trace_id = await started

            def open_trace(c: Console) -> str:
                c.browser.get(f"{c.base}/traces/{trace_id}")
                c.wait.until(lambda b: "step 1" in b.find_element(By.ID, "trace-logs").text)
                return str(c.browser.find_element(By.ID, "trace-outcome").text)

            before = await console.run(open_trace)
            go.set()
            await task

            def live(c: Console) -> tuple[str, str]:
                c.wait.until(lambda b: "step 2" in b.find_element(By.ID, "trace-logs").text)
                c.wait.until(lambda b: b.find_element(By.ID, "trace-outcome").text == "succeeded")
                c.shot("trace-live")
                return c.browser.find_element(By.ID, "trace-logs").text, c.browser.current_url

            logs_text, trace_url = await console.run(live)

            # Export: the link the page offers, downloaded with the browser's session, re-read.
            def export_link(c: Console) -> tuple[str, str]:
                c.browser.get(f"{c.base}/?q=tenant%3Aglobex")
                c.settled()
                assert c.browser.find_element(By.ID, "exports").is_displayed()  # the credential has audit:export
                assert c.browser.find_element(By.ID, "th-tenant").is_displayed()  # the view spans tenants
                tenants = {td.text for td in c.browser.find_elements(By.CSS_SELECTOR, "#rows td.tenant")}
                assert tenants == {"globex"}, tenants
                href = c.browser.find_element(By.ID, "export-csv").get_attribute("href") or ""
                return href, c.browser.get_cookie("audit_session")["value"]  # type: ignore[index]

            href, session = await console.run(export_link)
        finally:
            await asyncio.to_thread(console.browser.quit)
        async with httpx.AsyncClient(cookies={"audit_session": session}) as browser_like:
            exported = await browser_like.get(href)
    assert exported.status_code == 200
    rows = list(csv.reader(io.StringIO(exported.text)))
    globex = sorted(e["audit_id"] for e in history if e["tenant_id"] == "globex")
    assert sorted(r[7] for r in rows[2:]) == globex

    first, second = seen["pages"]
    assert seen["slash_focus"] == "q"
    assert seen["down_focus"] == first[1][5], "↓ moved to the second row"
    assert seen["opened"].endswith("/traces/" + first[1][5].replace("-", ""))
    assert not {r[5] for r in first} & {r[5] for r in second}
    assert seen["total"] == "72 entries"
    assert seen["approve"]
    assert all(r[2] == "approve" for r in seen["approve"])
    for key, expected in sorted_views.items():
        assert seen[key] == expected, key
    assert all(r[1] == "Bob Jones (bob)" for r in seen["user_id"])
    assert seen["user_id"]
    assert {r[4] for r in seen["model"]} == {"invoice"}
    assert {r[3] for r in seen["entity_id"]} == {"inv-3"}
    assert len(seen["entity_id"]) == 2
    assert {r[6] for r in seen["outcome"]} == {"failed"}
    assert len(seen["outcome"]) == 3
    assert len(seen["range"]) == 50  # everything here happened within the hour
    assert [r[2] for r in seen["search"]] == ["approve"]
    assert "unknown field `colour:` at position 16" in seen["error"]
    assert all(r[2] == "reject" for r in seen["reloaded"])
    assert seen["reloaded"]
    assert "since" in seen["bar_state"]
    assert "until" in seen["bar_state"]
    assert seen["bar_rows"] >= 1

    assert "invoice/inv-1" in entities["found"]
    assert all(item.startswith(("invoice/inv-",)) for item in entities["found"])
    assert any("System" in a or "Alice Smith (alice)" in a for a in entities["activity"])
    assert "amount" in entities["diff"]
    assert "100" in entities["diff"]
    assert "120" in entities["diff"]
    assert "recalculated" in entities["first_page"]
    assert "tax service slow" not in entities["first_page"]
    assert "recalculated" in entities["logs"]
    assert "tax service slow" in entities["logs"]
    assert "level-error" in entities["log_classes"]
    everywhere = entities["activity"]
    for tenant in ("acme", "globex"):
        summaries, _ = entities[f"in_{tenant}"]
        assert summaries, tenant
        assert len(summaries) == sum(f"tenant {tenant}" in a for a in everywhere), tenant
        assert all(f"tenant {tenant}" in a for a in summaries), tenant
    assert entities["in_initech"][0] == []
    assert "no audit entries" in entities["in_initech"][1]

    assert before == "in progress"
    assert logs_text.index("step 1") < logs_text.index("step 2")
    assert trace_url.endswith(f"/traces/{trace_id}")
