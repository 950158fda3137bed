"""The console in a real (headless) browser: sign in with a token, see only your tenant, sign out for good."""

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from audit_producer import Actor, AuditProducer, Entity
from tests.conftest import Isolated
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
