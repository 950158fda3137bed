"""The console in headless Chromium on the realistic mix: one time-zone setting for every time shown, an entity's
Activity as tabs with its execution logs, and axe-core over every page (no serious or critical violation)."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import pytest
import structlog
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from audit_producer import Actor, AuditProducer, Entity, add_trace_context
from tests.conftest import Isolated
from tests.e2e.test_web_ui import ARTIFACTS, _browser
from tests.history import record_history
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
ZONE = "America/Los_Angeles"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe(browser: WebDriver, script: str) -> list[dict[str, Any]]:
    """axe-core injected into the page as it stands: the serious and critical violations, each with its nodes."""
    browser.execute_script(script)
    result: dict[str, Any] = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']})"
        ".then(r => done(r), e => done({error: String(e)}));",
        AXE_TAGS,
    )
    assert "error" not in result, result
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _console(chromedriver: str, base: str, token: str, script: str, entity: str, trace_id: str) -> dict[str, Any]:
    """Runs in a thread: the zone setting, the entity tabs and axe over each page; a screenshot of each state."""
    browser = _browser(chromedriver)
    browser.set_script_timeout(60)
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
    # The chart is redrawn when its data arrives: an element found a moment ago may be gone; look again.
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    seen: dict[str, Any] = {"axe": {}}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        browser.save_screenshot(str(ARTIFACTS / f"console-{name}.png"))

    def check(page: str) -> None:
        seen["axe"][page] = axe(browser, script)

    def settled() -> None:
        wait.until(lambda b: "Loading" not in b.find_element(By.ID, "status").text)

    def first_time() -> tuple[str, str]:
        cell = browser.find_element(By.CSS_SELECTOR, "#rows tr.entry time")
        return str(cell.get_attribute("datetime")), str(cell.text)

    def chart_label() -> str:
        def label(b: WebDriver) -> str | None:
            found = b.find_elements(By.CSS_SELECTOR, "#chart svg")
            return str(found[0].get_attribute("aria-label")) if found else None

        return str(wait.until(label))

    try:
        browser.get(f"{base}/login")
        check("sign-in")
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#rows tr.entry"))
        settled()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#top-entities li"))
        seen["local"] = {
            "header": browser.find_element(By.ID, "time-zone-label").text,
            "option": Select(browser.find_element(By.ID, "tz")).first_selected_option.text,
            "cell": first_time(),
            "chart": chart_label(),
            "export": browser.find_element(By.ID, "export-csv").get_attribute("href"),
        }
        shot("zone-local")
        check("audit-log")

        Select(browser.find_element(By.ID, "tz")).select_by_value("utc")
        wait.until(lambda b: "(UTC)" in b.find_element(By.ID, "time-zone-label").text)
        settled()
        wait.until(lambda b: "(UTC)" in chart_label())
        seen["utc"] = {
            "url": browser.current_url,
            "cell": first_time(),
            "chart": chart_label(),
            "export": browser.find_element(By.ID, "export-csv").get_attribute("href"),
        }
        # A custom range typed in UTC wall time means that UTC instant.
        Select(browser.find_element(By.ID, "f-range")).select_by_value("custom")
        since = browser.find_element(By.ID, "f-since")
        browser.execute_script("arguments[0].value = '2026-01-02T03:04'", since)
        browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait.until(lambda b: "since=" in b.current_url)
        settled()
        seen["custom"] = parse_qs(urlparse(browser.current_url).query)
        seen["custom_field"] = browser.find_element(By.ID, "f-since").get_attribute("value")
        shot("zone-utc")

        # The setting travels with links: an entity's page opened from the table keeps UTC.
        browser.get(f"{base}/?tz=utc")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#rows tr.entry td.clip a"))
        browser.find_element(By.CSS_SELECTOR, "#rows tr.entry td.clip a").click()
        wait.until(lambda b: "/entities/" in b.current_url)
        settled()
        seen["entity_url"] = browser.current_url

        browser.get(f"{base}/entities")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#entity-list li"))
        check("entities")

        browser.get(f"{base}/entities/service/{entity}")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#activity li"))
        settled()
        tabs = browser.find_elements(By.CSS_SELECTOR, "#activity-tabs [role=tab]")
        seen["tabs"] = [(t.text, t.get_attribute("aria-selected"), t.get_attribute("tabindex")) for t in tabs]
        check("entity-audit")
        tabs[0].send_keys(Keys.ARROW_RIGHT)  # the arrow keys move between tabs and select them
        wait.until(lambda b: "tab=logs" in b.current_url)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#entity-logs tbody tr[data-log-id]"))
        settled()
        seen["logs_focus"] = browser.execute_script("return document.activeElement.id")
        seen["logs_panel"] = (
            browser.find_element(By.ID, "panel-logs").is_displayed(),
            browser.find_element(By.ID, "panel-audit").is_displayed(),
        )
        seen["logs"] = browser.execute_script(
            "return [...document.querySelectorAll('#entity-logs tbody tr')].map(tr => ({"
            "time: tr.querySelector('time') && tr.querySelector('time').getAttribute('datetime'),"
            "level: tr.cells[1].innerText, action: tr.cells[2].innerText, message: tr.cells[4].innerText,"
            "trace: tr.cells[2].querySelector('a') && tr.cells[2].querySelector('a').getAttribute('href')}))"
        )
        shot("entity-logs")
        check("entity-logs")
        Select(browser.find_element(By.ID, "log-level")).select_by_value("warning,error,critical")
        wait.until(lambda b: "level=" in b.current_url)
        settled()
        levels = (
            "return [...document.querySelectorAll('#entity-logs tbody tr[data-log-id]')]"
            ".map(tr => tr.cells[1].innerText)"
        )
        wait.until(lambda b: b.execute_script(levels) and "info" not in b.execute_script(levels))
        seen["warnings"] = browser.execute_script(levels)
        shot("entity-logs-warnings")
        browser.find_element(By.ID, "tab-logs").send_keys(Keys.ARROW_LEFT)
        wait.until(lambda b: "tab=logs" not in b.current_url)
        seen["back_to_audit"] = browser.find_element(By.ID, "panel-audit").is_displayed()

        browser.get(f"{base}/entities/template/tmpl-none?tab=logs")
        settled()
        seen["no_entity"] = browser.find_element(By.ID, "entity-logs").text

        browser.get(f"{base}/traces/{trace_id}")
        wait.until(lambda b: b.find_element(By.ID, "trace-live").text == "finished")
        wait.until(lambda b: b.find_elements(By.ID, "entry-detail"))
        check("trace")

        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
        )
        browser.get(f"{base}/entities/service/{entity}?tab=logs")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#entity-logs tbody tr[data-log-id]"))
        seen["phone_logs_width"] = browser.execute_script("return document.documentElement.scrollWidth")
        shot("phone-entity-logs")
        check("phone-entity-logs")
        browser.get(f"{base}/")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#rows tr.entry"))
        settled()
        check("phone-audit-log")
        return seen
    finally:
        browser.quit()


async def test_one_zone_setting_entity_logs_as_a_tab_and_no_serious_axe_finding(
    chromedriver: str,
    axe_script: str,
    isolated: Isolated,
    audit: AuditProducer,
    projector: Any,
    api: httpx.AsyncClient,
) -> None:
    history = await record_history(audit, isolated.stack.bootstrap)
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    entity = Entity(id="svc-logs", model="service")
    alice = Actor.user("u-alice", "Alice Example")
    async with audit.action("create", entity=entity, actor=alice, tenant="demo"):
        log.info("provisioning", step=1)
        log.warning("quota nearly reached", used=0.93)
    trace_id = await _failing_update(audit, log, entity, alice)

    async def projected() -> bool:
        lines = (await api.get("/v1/entities/service/svc-logs/logs")).json().get("data", [])
        everything = (await api.get("/v1/audit/count")).json()["count"]
        return len(lines) == 4 and everything >= len(history.audit_ids) + 2

    await eventually(projected, within=60)
    token = await isolated.token(("audit:read", "audit:export"), ("demo", "acme", "globex"))
    base = str(api.base_url).rstrip("/")
    seen = await asyncio.to_thread(_console, chromedriver, base, token, axe_script, "svc-logs", trace_id)

    for page, violations in seen["axe"].items():
        assert violations == [], (page, violations)
    assert set(seen["axe"]) >= {"sign-in", "audit-log", "entities", "entity-audit", "entity-logs", "trace"}

    local, utc = seen["local"], seen["utc"]
    assert local["header"] in ("(PST)", "(PDT)")
    assert local["option"] == f"local ({ZONE})"
    instant = datetime.fromisoformat(local["cell"][0].replace("Z", "+00:00"))
    assert local["cell"][1] == _written(instant.astimezone(ZoneInfo(ZONE)))
    assert f"({ZONE})" in local["chart"], "the chart's days are the viewer's days"
    assert "tz=America%2FLos_Angeles" in str(local["export"])
    assert parse_qs(urlparse(utc["url"]).query)["tz"] == ["utc"]
    assert utc["cell"][1] == _written(datetime.fromisoformat(utc["cell"][0].replace("Z", "+00:00")).astimezone(UTC))
    assert "(UTC)" in utc["chart"]
    assert "tz=UTC" in str(utc["export"])
    assert seen["custom"]["since"] == ["2026-01-02T03:04:00.000Z"], seen["custom"]
    assert seen["custom_field"] == "2026-01-02T03:04"
    assert parse_qs(urlparse(seen["entity_url"]).query).get("tz") == ["utc"], seen["entity_url"]

    assert seen["tabs"] == [("Audit", "true", "0"), ("Execution logs", "false", "-1")]
    assert seen["logs_focus"] == "tab-logs"
    assert seen["logs_panel"] == (True, False)
    lines = seen["logs"]
    assert [line["message"] for line in lines] == ["resize failed", "resizing", "quota nearly reached", "provisioning"]
    assert [line["time"] for line in lines] == sorted((line["time"] for line in lines), reverse=True)
    assert [line["action"] for line in lines] == ["update", "update", "create", "create"]
    assert lines[0]["trace"] == f"/traces/{trace_id}"
    assert seen["warnings"] == ["error", "warning"]
    assert seen["back_to_audit"] is True
    assert "No execution-log lines" in seen["no_entity"]
    assert seen["phone_logs_width"] <= 390


async def _failing_update(audit: AuditProducer, log: Any, entity: Entity, actor: Actor) -> str:
    """An action that logs and fails; its trace id."""
    trace_id = ""
    try:
        async with audit.action("update", entity=entity, actor=actor, tenant="demo") as act:
            trace_id = act.audit_id.hex
            log.info("resizing")
            log.error("resize failed", code=507)
            raise RuntimeError("no space")
    except RuntimeError:
        pass
    return trace_id


def _written(at: datetime) -> str:
    """A time as the console writes it in Chromium's en-US locale."""
    return at.strftime("%-m/%-d/%Y, %-I:%M:%S %p")


async def test_stats_and_chart_count_the_zones_days(isolated: Isolated, audit: AuditProducer, projector: Any,
                                                     api: httpx.AsyncClient) -> None:  # fmt: skip
    history = await record_history(audit, isolated.stack.bootstrap)

    async def everything() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        while True:
            page = (await api.get("/v1/audit", params=params)).json()
            rows += page["data"]
            if not page["next_cursor"]:
                break
            params["cursor"] = page["next_cursor"]
        return rows if len(rows) >= len(history.audit_ids) else None

    entries = await eventually(everything, within=60)
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in entries]
    since = min(times).replace(minute=0, second=0, microsecond=0)
    until = max(times).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    window = {"since": since.isoformat(), "until": until.isoformat(), "group_by": "bucket", "bucket": "day"}
    for zone, source in ((ZONE, "rollups"), ("Asia/Kolkata", "entries"), ("UTC", "rollups")):
        body = (await api.get("/v1/audit/stats", params={**window, "tz": zone})).json()
        assert body["time_zone"] == zone
        assert source in body["source"].split("+"), (zone, body["source"])
        expected: dict[str, int] = {}
        for at in times:
            local = at.astimezone(ZoneInfo(zone))
            midnight = datetime.combine(local.date(), datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
            key = midnight.strftime("%Y-%m-%dT%H:%M:%S+00:00")
            expected[key] = expected.get(key, 0) + 1
        assert {r["bucket"]: r["count"] for r in body["rows"]} == expected, zone
        svg = (await api.get("/v1/audit/chart.svg", params={**window, "tz": zone})).text
        for bucket in expected:
            assert f'data-since="{max(datetime.fromisoformat(bucket), since).isoformat()}"' in svg, (zone, bucket)
    for bad in ("Mars/Olympus", "../etc", "utc'; drop"):
        answer = await api.get("/v1/audit/stats", params={**window, "tz": bad})
        assert answer.status_code == 400, bad
        assert "time zone" in answer.json()["detail"]


async def test_entity_logs_stay_in_the_callers_tenants_and_their_cursors_in_their_view(
    isolated: Isolated, audit: AuditProducer, projector: Any, api: httpx.AsyncClient
) -> None:
    await record_history(audit, isolated.stack.bootstrap)
    log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[add_trace_context, audit.logs])
    for tenant in ("acme", "globex"):
        for i in range(3):
            async with audit.action("sync", entity=Entity(id="shared-1", model="integration"),
                                    actor=Actor.system("scheduler"), tenant=tenant):  # fmt: skip
                log.info(f"{tenant} line {i}")

    async def lines(**params: Any) -> list[dict[str, Any]] | None:
        page = (await api.get("/v1/entities/integration/shared-1/logs", params=params)).json()
        return page["data"] if len(page["data"]) == 6 else None

    assert await eventually(lines, within=60)
    acme = {"authorization": f"Bearer {await isolated.token(('audit:read',), tenants=('acme',))}"}
    seen: list[str] = []
    cursor = None
    for _ in range(5):  # pages of two, newest first, until the end
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/entities/integration/shared-1/logs", params=params, headers=acme)).json()
        seen += [line["message"] for line in page["data"]]
        assert all(line["tenant_id"] == "acme" for line in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["acme line 2", "acme line 1", "acme line 0"]
    everyone = (await api.get("/v1/entities/integration/shared-1/logs", params={"tenant": "globex"})).json()["data"]
    assert [line["message"] for line in everyone] == ["globex line 2", "globex line 1", "globex line 0"]
    first = (await api.get("/v1/entities/integration/shared-1/logs", params={"limit": "1"})).json()
    moved = await api.get("/v1/entities/integration/other/logs", params={"limit": "1", "cursor": first["next_cursor"]})
    assert moved.status_code == 400, moved.text  # a cursor continues only the view it came from
    for bad in ({"level": "loud"}, {"limit": "0"}, {"cursor": "not-a-cursor"}):
        answer = await api.get("/v1/entities/integration/shared-1/logs", params=bad)
        assert answer.status_code in (400, 422), (bad, answer.status_code)
        assert answer.json()["detail"], bad
