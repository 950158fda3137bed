"""The console in a real (headless) browser: sign in with a token, see only your tenant, sign out for good."""

import asyncio
import json
import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from audit_schemas import encode
from tests.conftest import Isolated
from tests.factories import action_event, key_of, send_keyed
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.browser]

ARTIFACTS = Path(tempfile.gettempdir()) / "audit-trail-test-artifacts"


def _browser(chromedriver: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def _sign_in_and_read(chromedriver: str, base: str, token: str, wanted: list[str]) -> dict[str, Any]:
    """Runs in a thread (Selenium blocks): sign in, wait for the rows, sign out, try to come back."""
    browser = _browser(chromedriver)
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(f"{base}/")
        wait.until(expected_conditions.url_contains("/login"))
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda b: all(audit_id in b.page_source for audit_id in wanted))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-signed-in.png"))
        html = browser.page_source
        cookies = {c["name"]: c for c in browser.get_cookies()}
        who = browser.find_element(By.ID, "who").text
        browser.find_element(By.ID, "signout").click()
        wait.until(expected_conditions.url_contains("/login"))
        browser.get(f"{base}/")
        wait.until(expected_conditions.url_contains("/login"))
        return {"html": html, "cookies": cookies, "who": who}
    finally:
        browser.quit()


async def test_sign_in_shows_only_the_tenants_entries_and_sign_out_ends_the_session(
    chromedriver: str, isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    ids = []
    for action, user, tenant in (
        ("create", Actor.user("u-ui", "Uma Interface"), "acme"),
        ("sync", Actor.system("scheduler"), "acme"),
        ("delete", Actor.user("u-other", "Other Tenant"), "globex"),
    ):
        async with audit.action(action, entity=Entity(id="ui-1", model="resource"), actor=user, tenant=tenant) as act:
            ids.append(str(act.audit_id))

    async def projected() -> bool:
        return bool((await api.get("/v1/audit")).json()["count"] == 3)

    await eventually(projected)
    token = await isolated.token(("audit:read",), ("acme",))
    seen = await asyncio.to_thread(_sign_in_and_read, chromedriver, str(api.base_url), token, ids[:2])
    html = seen["html"]
    assert "Uma Interface (u-ui)" in html
    assert "scheduler" in html
    assert ids[2] not in html, "another tenant's entry is never shown"
    assert "Other Tenant" not in html
    assert html.count('class="entry"') == 2
    cookie = seen["cookies"]["audit_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert token not in str(seen["cookies"]), "the credential itself never lands in the browser"
    assert "test-" in seen["who"]
    # The ended session is dead server-side: a copy of the cookie no longer works.
    async with httpx.AsyncClient(base_url=str(api.base_url), cookies={"audit_session": cookie["value"]}) as stale:
        assert (await stale.get("/v1/audit")).status_code == 401


def _signed_out_states(chromedriver: str, base: str, token: str, trace_id: str) -> dict[str, Any]:
    """Runs in a thread: deep links while signed out, the trace view's failure states, Back after sign-out, an
    ended session, a hostile `next`; a screenshot of each state."""
    browser = _browser(chromedriver)
    wait = WebDriverWait(browser, 30)
    seen: dict[str, Any] = {}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def sign_in() -> None:
        wait.until(expected_conditions.url_contains("/login"))
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()

    def live_text() -> str:
        return str(browser.find_element(By.ID, "trace-live").text)

    try:
        browser.get(f"{base}/traces/{trace_id}")  # a deep link, signed out
        wait.until(expected_conditions.url_contains("/login?next="))
        browser.save_screenshot(str(ARTIFACTS / "console-deep-link-sign-in.png"))
        sign_in()
        wait.until(lambda b: b.current_url == f"{base}/traces/{trace_id}")
        wait.until(lambda b: live_text() == "finished")
        seen["trace"] = browser.find_element(By.ID, "trace-entry").text
        seen["no_logs"] = browser.find_element(By.ID, "trace-logs").text
        terms = browser.find_elements(By.CSS_SELECTOR, "#entry-detail dt")
        values = browser.find_elements(By.CSS_SELECTOR, "#entry-detail dd")
        seen["detail"] = {t.text: v.text for t, v in zip(terms, values, strict=True)}
        seen["proof"] = browser.find_element(By.CSS_SELECTOR, "#proof a").get_attribute("href")
        seen["command"] = browser.find_element(By.CSS_SELECTOR, "pre.command").text
        browser.find_element(By.CSS_SELECTOR, "details summary").click()
        seen["raw"] = browser.find_element(By.ID, "raw-json").text
        browser.save_screenshot(str(ARTIFACTS / "console-entry-detail.png"))
        seen["diff"] = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#trace-entry table.diff tr")
        ][1:]
        browser.save_screenshot(str(ARTIFACTS / "console-trace-returned-to.png"))

        browser.get(f"{base}/traces/not-a-trace")
        wait.until(lambda b: "is not a trace id" in b.find_element(By.ID, "trace-entry").text)
        seen["malformed"] = (browser.find_element(By.CSS_SELECTOR, "#trace-entry [role=alert]").text, live_text())
        browser.save_screenshot(str(ARTIFACTS / "console-trace-malformed.png"))

        browser.get(f"{base}/traces/{'ab' * 16}")  # well-formed, nothing recorded: after the grace period
        wait.until(lambda b: "Nothing recorded for this trace." in b.find_element(By.ID, "trace-entry").text)
        seen["unknown"] = (live_text(), browser.find_element(By.ID, "trace-logs").is_displayed())
        browser.save_screenshot(str(ARTIFACTS / "console-trace-unknown.png"))

        browser.get(f"{base}/")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#top-users a"))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart rect.bar"))
        seen["all_time"] = {
            "first_bar": min(b.get_attribute("data-since") or "" for b in
                             browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")),
            "top_entities": browser.find_element(By.ID, "top-entities").text,
        }  # fmt: skip
        browser.save_screenshot(str(ARTIFACTS / "console-all-time.png"))
        seen["keyboard"] = _keyboard(browser, wait)
        seen["offers"] = {
            "exports": browser.find_element(By.ID, "exports").is_displayed(),  # audit:read only: none offered
            "tenant_column": browser.find_element(By.ID, "th-tenant").is_displayed(),  # one tenant: no column
            "top_users": [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#top-users a")],
            "placeholder": browser.find_element(By.ID, "q").get_attribute("placeholder"),
        }
        browser.find_element(By.ID, "q").send_keys("user:u-ui")
        browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()  # Apply keeps the typed query
        wait.until(lambda b: "q=user%3Au-ui" in b.current_url)
        seen["applied"] = browser.current_url
        query = browser.find_element(By.ID, "q")
        query.clear()
        query.send_keys('action:"')  # a search error: every part of the page shows it, nothing of the last view
        browser.find_element(By.CSS_SELECTOR, "#search button").click()
        wait.until(lambda b: b.find_element(By.ID, "status").get_attribute("class") == "error")
        seen["error_view"] = {
            "rows": len(browser.find_elements(By.CSS_SELECTOR, "#rows tr")),
            "chart": browser.find_element(By.ID, "chart").get_attribute("innerHTML"),
            "tops": browser.find_element(By.ID, "top-users").text + browser.find_element(By.ID, "top-entities").text,
            "older": browser.find_element(By.ID, "next").is_enabled(),
        }
        browser.save_screenshot(str(ARTIFACTS / "console-search-error.png"))

        browser.get(f"{base}/?q=event:update")
        wait.until(lambda b: "entry" in b.page_source and trace_id[:8] in b.page_source)
        browser.find_element(By.ID, "signout").click()
        wait.until(expected_conditions.url_contains("/login"))
        browser.back()  # the browser's cache must not show the audit log again
        wait.until(expected_conditions.url_contains("/login"))
        seen["back"] = (browser.current_url, trace_id[:8] in browser.page_source)
        browser.save_screenshot(str(ARTIFACTS / "console-back-after-sign-out.png"))

        sign_in()
        wait.until(lambda b: "/login" not in b.current_url)
        seen["after_back"] = browser.current_url
        session = browser.get_cookie("audit_session")
        assert session is not None
        seen["session"] = session["value"]
        return seen
    finally:
        seen["browser"] = browser


def _active(browser: webdriver.Chrome, what: str = "e => e.id") -> Any:
    return browser.execute_script(f"return ({what})(document.activeElement)")


def _keyboard(browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome]) -> dict[str, Any]:
    """The audit log by keyboard alone: the skip link, Tabs to the first row, the chart as one tab stop with arrow
    keys between named bars, focus back on the row after Enter → trace → Back."""
    out: dict[str, Any] = {}
    browser.execute_script("document.activeElement && document.activeElement.blur()")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    out["first_tab"] = _active(browser)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    out["skipped_to"] = _active(browser)
    out["tabs_to_first_row"] = None
    for tabs in range(1, 40):  # bounded
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if _active(browser, "e => e.matches('tr.entry')"):
            out["tabs_to_first_row"] = tabs
            break
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    out["bar_tab_stops"] = sum(1 for b in bars if b.get_attribute("tabindex") == "0")
    browser.execute_script("document.querySelector('#chart rect.bar[tabindex=\"0\"]').focus()")
    first = _active(browser, "e => e.getAttribute('aria-label')")
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    out["bars"] = (first, _active(browser, "e => e.getAttribute('aria-label')"))
    row = browser.find_elements(By.CSS_SELECTOR, "#rows tr.entry")[-1]
    audit_id = row.get_attribute("data-audit-id")
    browser.execute_script("arguments[0].focus()", row)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(expected_conditions.url_contains("/traces/"))
    browser.back()
    wait.until(lambda b: _active(b, "e => e.dataset && e.dataset.auditId") == audit_id)
    out["focus_restored"] = True
    return out


def _ended_session(browser: webdriver.Chrome, base: str, token: str) -> dict[str, Any]:
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(f"{base}/entities")
        wait.until(expected_conditions.url_contains("expired=1"))
        message = browser.find_element(By.ID, "message").text
        browser.save_screenshot(str(ARTIFACTS / "console-session-ended.png"))
        browser.get(f"{base}/login?next=//127.0.0.2/steal")  # a hostile next: never followed off this console
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda b: "/login" not in b.current_url)
        return {"message": message, "landed": browser.current_url}
    finally:
        browser.quit()


async def test_deep_links_failure_states_and_the_end_of_a_session(
    chromedriver: str, isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    async with audit.action(
        "update", entity=Entity(id="deep-1", model="resource"), actor=Actor.user("u-ui"), tenant="acme"
    ) as act:
        act.change(
            "config", {"cpu": 1, "limits": {"mem": 512, "disk": 10}}, {"cpu": 1, "limits": {"mem": 1024}, "gpu": 0}
        )
    trace_id = act.audit_id.hex
    old = action_event("ancient-1")  # thirty days ago: "all time" must reach it
    month_ago = datetime.now(UTC) - timedelta(days=30)
    old = old.model_copy(update={"time": month_ago, "data": old.data.model_copy(update={"started_at": month_ago})})
    await send_keyed(isolated.stack.bootstrap, isolated.projector.audit_topic, [(encode(old), key_of(old))])

    async def projected() -> bool:
        found = (await api.get(f"/v1/traces/{trace_id}")).status_code == 200
        return found and (await api.get(f"/v1/audit/{old.data.audit_id}")).status_code == 200

    await eventually(projected)
    token = await isolated.token(("audit:read",), ("acme",))
    base = str(api.base_url).rstrip("/")
    seen = await asyncio.to_thread(_signed_out_states, chromedriver, base, token, trace_id)
    browser = seen["browser"]
    if "session" not in seen:
        browser.quit()
        pytest.fail("the browser steps stopped early")
    assert "update" in seen["trace"]
    assert "resource/deep-1" in seen["trace"]
    detail = seen["detail"]
    assert detail["Trace id"] == trace_id
    assert detail["Tenant"] == "acme"
    assert detail["Source"] == "test-service"
    assert {"Request id", "Client IP", "User agent", "Correlation id", "Duration", "Revision"} <= set(detail)
    assert re.search(r"\.\d{3}", detail["Time"]), detail["Time"]  # to the millisecond
    assert detail["Duration"].endswith(" ms")
    assert seen["proof"].endswith(f"/v1/audit/{act.audit_id}/proof")
    assert seen["command"].startswith("audit-schemas verify-inclusion ")
    assert json.loads(seen["raw"])["trace_id"] == trace_id
    assert seen["diff"] == [  # nested objects diffed by path: only what changed
        ["config.gpu", "—", "0"],
        ["config.limits.disk", "10", "—"],
        ["config.limits.mem", "512", "1024"],
    ]
    alert, live = seen["malformed"]
    assert "not a trace id" in alert
    assert live == ""  # never "live" for an id that cannot be one
    assert seen["unknown"] == ("not live", False)  # and no bare table headers
    assert "No execution-log lines were recorded under this trace." in seen["no_logs"]
    almost_a_month = (datetime.now(UTC) - timedelta(days=29)).isoformat()
    assert seen["all_time"]["first_bar"] < almost_a_month, seen["all_time"]  # not the last 7 days only
    assert "resource/ancient-1" in seen["all_time"]["top_entities"]
    keys = seen["keyboard"]
    assert keys["first_tab"] == "skip"  # the first Tab stop is the skip link
    assert keys["skipped_to"] == "audit-table"
    assert keys["tabs_to_first_row"] is not None, keys
    assert keys["tabs_to_first_row"] <= 10, keys  # was 94
    assert keys["bar_tab_stops"] == 1  # the chart is one tab stop (was one per bar segment)
    first_bar, next_bar = keys["bars"]
    assert first_bar, keys  # each bar has an accessible name
    assert next_bar, keys
    assert first_bar != next_bar, keys  # the arrow keys move between bars
    assert keys["focus_restored"] is True
    offers = seen["offers"]
    assert offers["exports"] is False
    assert offers["tenant_column"] is False
    assert any(h.endswith("/?user_id=u-ui") for h in offers["top_users"]), offers  # they narrow the table
    assert "user:u-" in offers["placeholder"]  # the example names ids as the demo has them
    assert "q=user%3Au-ui" in seen["applied"]
    assert seen["error_view"] == {"rows": 0, "chart": "", "tops": "", "older": False}
    back_url, shown = seen["back"]
    assert "/login" in back_url
    assert shown is False, "Back after sign-out showed audit data from the cache"
    assert seen["after_back"] == f"{base}/?q=event:update"  # signing in again returns to where Back led
    async with httpx.AsyncClient(base_url=base, cookies={"audit_session": seen["session"]}) as other:
        assert (await other.delete("/v1/session")).status_code == 204  # signed out elsewhere
    ended = await asyncio.to_thread(_ended_session, browser, base, token)
    assert "session has ended" in ended["message"]
    assert ended["landed"] == f"{base}/"


LONG_ID = "tenant-resource-" + "x" * 240  # 256 characters


def _phone_and_long_values(chromedriver: str, base: str, token: str, trace_id: str) -> dict[str, Any]:
    """Runs in a thread: long values at desktop width, then the same pages at 390 px (a phone)."""
    browser = _browser(chromedriver)
    wait = WebDriverWait(browser, 30)
    seen: dict[str, Any] = {}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width = "return document.documentElement.scrollWidth"
    try:
        browser.get(f"{base}/login")
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#rows tr.entry"))
        row = browser.find_element(By.CSS_SELECTOR, "#rows tr.entry")
        seen["row_height"] = row.size["height"]
        seen["entity_title"] = row.find_element(By.CSS_SELECTOR, "td.clip a").get_attribute("title")
        browser.get(f"{base}/traces/{trace_id}")
        wait.until(lambda b: b.find_element(By.ID, "trace-live").text == "finished")
        seen["desktop"] = (browser.execute_script(width), browser.find_element(By.ID, "trace-logs").size["width"])
        browser.save_screenshot(str(ARTIFACTS / "console-long-values.png"))

        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
        )
        browser.get(f"{base}/")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart svg"))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#top-entities li"))
        tops = browser.find_element(By.ID, "top-entities")
        seen["phone_log"] = {
            "page": browser.execute_script(width),
            "chart": browser.find_element(By.ID, "chart-box").size["width"],
            "tops_right": tops.location["x"] + tops.size["width"],
            "header_hidden": not browser.find_element(By.CSS_SELECTOR, "#audit-table thead").is_displayed(),
        }
        browser.save_screenshot(str(ARTIFACTS / "console-phone-audit-log.png"))
        browser.get(f"{base}/traces/{trace_id}")
        wait.until(lambda b: b.find_element(By.ID, "trace-live").text == "finished")
        after = browser.find_element(By.CSS_SELECTOR, ".diff td.after")
        seen["phone_trace"] = {
            "wide": browser.execute_script(
                "return [...document.querySelectorAll('body *')].filter(e => e.scrollWidth > e.clientWidth + 1 && "
                "getComputedStyle(e).overflowX === 'visible').slice(0, 6).map(e => e.tagName + '.' + e.className + "
                "'#' + e.id + ':' + e.scrollWidth + '/' + e.clientWidth)"
            ),
            "page": browser.execute_script(width),
            "after_right": after.location["x"] + after.size["width"],
        }
        browser.save_screenshot(str(ARTIFACTS / "console-phone-trace.png"))
        return seen
    finally:
        browser.quit()


async def test_long_values_stay_readable_and_the_console_works_on_a_phone(
    chromedriver: str, isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    actor = Actor.user("u-" + "long" * 20, "A Very Long Display Name " * 6)
    async with audit.action("update", entity=Entity(id=LONG_ID, model="resource"), actor=actor, tenant="acme") as act:
        act.change("description", "short", "a much longer description " * 12)
        log.info("resized " + "volume " * 40, detail={"path": "/" + "deep/" * 60})
    trace_id = act.audit_id.hex

    async def projected() -> bool:
        trace = (await api.get(f"/v1/traces/{trace_id}")).json()
        return bool(trace.get("logs")) and trace["entry"]["outcome"]["status"] == "succeeded"

    await eventually(projected)
    token = await isolated.token(("audit:read",), ("acme",))
    seen = await asyncio.to_thread(_phone_and_long_values, chromedriver, str(api.base_url).rstrip("/"), token, trace_id)
    assert seen["row_height"] < 60, seen  # one line, cut, not three or four lines
    assert seen["entity_title"] == LONG_ID  # the whole value on hover
    page, logs = seen["desktop"]
    assert page <= 1400, seen
    assert logs <= 1400, seen  # the log table stays inside the window
    phone = seen["phone_log"]
    assert phone["page"] <= 390, phone  # no sideways scrolling
    assert phone["chart"] >= 330, phone  # full width, not a thumbnail
    assert phone["tops_right"] <= 390, phone
    assert phone["header_hidden"] is True  # rows as cards
    assert seen["phone_trace"]["page"] <= 390, seen["phone_trace"]
    assert seen["phone_trace"]["after_right"] <= 390, seen  # the diff's "After" reachable
