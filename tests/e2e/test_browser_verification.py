"""The console's detail view verifies an entry's inclusion proof, the log's signature and two litewitness
cosignatures in the browser (WebCrypto), against keys the viewer pinned; and on the same documents — tampered ones
included — the browser and the offline CLI give the same verdict."""

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from audit_producer import AuditProducer
from audit_schemas.checkpoint import split_note
from tests.conftest import Isolated
from tests.e2e.test_console_zones_and_logs import axe
from tests.e2e.test_proofs import _verify
from tests.e2e.test_web_ui import ARTIFACTS, _browser
from tests.e2e.test_witnesses import witnessed_history
from tests.witness import Litewitness, TestCosigner

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.browser]


def _flip(b64: str, at: int = 10) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _cases(proof: dict[str, Any], log: str, w1: str, w2: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(document, policy) pairs: the genuine one and what an attacker or a careless copy would hand a verifier."""
    both = {"logKeys": [log], "witnesses": [w1, w2], "minWitnesses": 2}
    body, lines = split_note(proof["checkpoint"])
    unwitnessed = body + "\n" + "".join(line for line in lines if "witness.test/" not in line)
    origin, size, root = body.split("\n")[:3]
    other_root = f"{origin}\n{size}\n{_flip(root, 3)}\n"
    stranger = TestCosigner("witness.test/w2").verifier_key
    path = list(proof["inclusion_proof"])
    return {
        "genuine": (proof, both),
        "genuine, no witnesses pinned": (proof, {"logKeys": [log], "witnesses": [], "minWitnesses": 0}),
        "altered record": ({**proof, "leaf_data": _flip(proof["leaf_data"], 40)}, both),
        "altered proof hash": ({**proof, "inclusion_proof": [_flip(path[0]), *path[1:]]}, both),
        "another root": ({**proof, "checkpoint": other_root + "\n" + "".join(lines)}, both),
        "cosignatures stripped": ({**proof, "checkpoint": unwitnessed}, both),
        "a witness nobody pinned": (proof, {**both, "witnesses": [w1, stranger]}),
        "another tree size": ({**proof, "tree_size": proof["tree_size"] + 1}, both),
        "another leaf": ({**proof, "leaf_index": (proof["leaf_index"] + 1) % proof["tree_size"]}, both),
    }


def _in_browser(
    chromedriver: str, base: str, token: str, trace_id: str, pins: dict[str, Any], cases: dict[str, Any], script: str
) -> dict[str, Any]:
    browser = _browser(chromedriver)
    browser.set_script_timeout(60)
    wait = WebDriverWait(browser, 30)
    seen: dict[str, Any] = {}
    try:
        browser.get(f"{base}/login")
        browser.find_element(By.ID, "credential").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#rows tr.entry"))
        browser.get(f"{base}/traces/{trace_id}")
        wait.until(lambda b: "pin the log" in b.find_element(By.ID, "browser-verification").text)
        seen["unpinned"] = browser.find_element(By.ID, "browser-verification").text
        browser.find_element(By.ID, "pin-log").send_keys(pins["log"])
        browser.find_element(By.ID, "pin-witnesses").send_keys("\n".join(pins["witnesses"]))
        browser.find_element(By.ID, "pin-min").clear()
        browser.find_element(By.ID, "pin-min").send_keys("2")
        browser.find_element(By.CSS_SELECTOR, "#pin-form button").click()
        wait.until(lambda b: "erified in this browser:" in b.find_element(By.ID, "browser-verification").text)
        seen["verified"] = browser.find_element(By.ID, "browser-verification").text
        browser.execute_script("document.getElementById('browser-verification').scrollIntoView()")
        browser.save_screenshot(str(ARTIFACTS / "console-verified-in-browser.png"))
        seen["axe"] = axe(browser, script)
        seen["verdicts"] = {
            name: browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "window.AuditVerify.verifyInclusion(arguments[0], arguments[1]).then(done, e => done({ok: false, "
                "detail: String(e)}));",
                document,
                policy,
            )
            for name, (document, policy) in cases.items()
        }
        # A tampered proof in the page itself: the page's own verifier refuses it and says why.
        altered = cases["altered record"][0]
        seen["tampered_badge"] = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.AuditVerify.verifyInclusion(arguments[0], arguments[1]).then(v => {"
            "  const out = document.getElementById('browser-verification');"
            "  out.textContent = (v.ok ? '✔ Verified' : '✘ Not verified') + ' in this browser: ' + v.detail;"
            "  done(out.textContent); });",
            altered,
            cases["altered record"][1],
        )
        browser.save_screenshot(str(ARTIFACTS / "console-refused-in-browser.png"))
        return seen
    finally:
        browser.quit()


async def test_the_browser_verifies_inclusion_and_cosignatures_and_agrees_with_the_cli(
    chromedriver: str,
    axe_script: str,
    isolated: Isolated,
    audit: AuditProducer,
    api: httpx.AsyncClient,
    witnesses: list[Litewitness],
    tmp_path: Path,
) -> None:
    _, signer, history = await witnessed_history(isolated, audit, witnesses, quorum=2)
    audit_id = history.demo_ids[4]  # the demo's `execute`, with log lines from a worker thread
    proof = (await api.get(f"/v1/audit/{audit_id}/proof")).json()
    assert proof["checkpoint"].count("\u2014 witness.test/") == 2, proof["checkpoint"]
    w1, w2 = (w.vkey for w in witnesses)
    cases = _cases(proof, signer.verifier_key, w1, w2)
    token = await isolated.token(("audit:read",), ("demo", "acme", "globex"))
    pins = {"log": signer.verifier_key, "witnesses": [w1, w2]}
    seen = await asyncio.to_thread(
        _in_browser, chromedriver, str(api.base_url).rstrip("/"), token, audit_id.replace("-", ""), pins, cases,
        axe_script,
    )  # fmt: skip

    assert "Not verified in this browser: pin the log's verifier key" in seen["unpinned"]
    assert seen["verified"].startswith("✔ Verified in this browser: leaf "), seen["verified"]
    assert (
        f"at tree size {proof['tree_size']}, cosigned by 2 witnesses (witness.test/w1, witness.test/w2)"
        in (seen["verified"])
    )
    assert seen["axe"] == []
    assert seen["tampered_badge"].startswith("✘ Not verified in this browser:"), seen["tampered_badge"]

    # The offline CLI on the same documents and keys: the same verdict, case by case.
    for name, (document, policy) in cases.items():
        path = tmp_path / "proof.json"
        path.write_text(json.dumps(document))
        args = ["verify-inclusion", str(path), *(a for k in policy["logKeys"] for a in ("--key", k))]
        args += [a for k in policy["witnesses"] for a in ("--witness", k)]
        args += ["--min-witnesses", str(policy["minWitnesses"])]
        code, out = await _verify(*args)
        browser = seen["verdicts"][name]
        assert (code == 0) == browser["ok"], (name, out, browser)
        assert browser["ok"] == name.startswith("genuine"), (name, browser)
        if browser["ok"]:
            assert browser["detail"] in out, (name, out, browser)
