"""The demo's dashboard in headless Chromium: three live node cards, an operator's beep and LED
change shown on the page, no console errors, and a screenshot (test-artifacts/, docs/)."""

from __future__ import annotations

import os
import re
import shutil
import stat

import pytest

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DEADLINE_MS = 20_000


def test_demo_writes_and_prints_the_tokens(demo):
    path = demo.state / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(demo.tokens["nodes"]) == {"hub", "pi4", "pizero"} and len(demo.tokens["operator"]) >= 24
    assert f"operator token: {demo.tokens['operator']}" in demo.out.read_text()


def beeps(page) -> int:
    text = page.text_content('[data-buzzer="pi4"] [data-buzzer-detail]') or ""
    return int(re.match(r"(\d+) beeps?", text).group(1))


def test_dashboard_live_cards_operator_controls_and_screenshot(demo, browser, artifacts):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(demo.url("/"))

    # three server-rendered node cards, each with numbers in it, the right badges
    cards = page.locator("article.card")
    assert cards.count() == 3
    for name, role, profile in (("hub", "Hub", "WASM"), ("pi4", "Spoke", "WASM"), ("pizero", "Spoke", "Native")):
        card = page.locator(f'[data-node="{name}"]')
        assert card.locator(".badge").all_text_contents() == [role, profile]
        assert re.search(r"\d+(\.\d+)? °C", card.locator('[data-key$="/cpu_temperature"] .value').text_content())
        assert card.locator(".pill").text_content() == "online"
    assert re.fullmatch(r"-?\d+\.\d °C", page.text_content('[data-key="pi4/dht22/temperature"] .value'))
    assert re.fullmatch(r"\d+ · (good|moderate|unhealthy.*|very unhealthy|hazardous)",
                        page.text_content('[data-key="pi4/bme680/iaq"] .value'))
    assert page.locator('[data-leds="pi4"] .led').count() == 11
    assert page.text_content('[data-key="pizero/network-hub/link"] .value').startswith("🟢")
    page.wait_for_selector("#chart svg", timeout=DEADLINE_MS)

    # the series picker: the update names only the list's signature, and a page whose list is not
    # the one signed fetches it (GET /api/series), keeping the series it shows
    total, shown = page.locator("#series option").count(), page.input_value("#series")
    assert total >= 20 and shown
    page.evaluate("() => { const s = document.getElementById('series'); s.lastElementChild.remove(); "
                  "s.dataset.sig = 'stale'; }")
    page.wait_for_function("n => document.querySelectorAll('#series option').length === n"
                           " && document.getElementById('series').dataset.sig !== 'stale'", arg=total,
                           timeout=DEADLINE_MS)
    assert page.input_value("#series") == shown

    # a value changes without a reload: same document (the marker survives), new text
    page.evaluate("window.__sameDocument = true")
    before = page.eval_on_selector_all("[data-key] .value, [data-status]", "els => els.map(e => e.textContent)")
    page.wait_for_function(
        "before => [...document.querySelectorAll('[data-key] .value, [data-status]')]"
        ".some((e, i) => e.textContent !== before[i])", arg=before, timeout=DEADLINE_MS)
    assert page.evaluate("window.__sameDocument") is True

    # controls stay disabled until the operator unlocks them with the token
    beep = page.locator('[data-buzzer="pi4"] [data-buzz="beep"]')
    assert beep.is_disabled()
    page.click("#operator-toggle")
    page.fill("#token", demo.tokens["operator"])
    page.click("#operator-form button[type=submit]")
    page.wait_for_function("() => document.body.classList.contains('operator')", timeout=DEADLINE_MS)
    assert beep.is_enabled()

    # beep: the buzzer's card shows one more beep and the command
    count = beeps(page)
    beep.click()
    page.wait_for_function(
        "n => /^(\\d+) beeps?/.test(document.querySelector('[data-buzzer=\"pi4\"] [data-buzzer-detail]').textContent)"
        " && parseInt(document.querySelector('[data-buzzer=\"pi4\"] [data-buzzer-detail]').textContent) > n",
        arg=count, timeout=DEADLINE_MS)
    assert "last: beep" in page.text_content('[data-buzzer="pi4"] [data-buzzer-detail]')

    # paint LED 7 blue: the dot on the page turns blue (the strip's state, polled back)
    page.click('[data-leds="pi4"] [data-colour="blue"]')
    page.click('[data-leds="pi4"] .led[data-i="7"]')
    page.wait_for_function(
        "() => document.querySelector('[data-leds=\"pi4\"] .led[data-i=\"7\"]').getAttribute('fill') === '#0000ff'",
        timeout=DEADLINE_MS)

    # the picture for the README: every reading has a value (a monitor's first CPU load has none),
    # and the chart redrawn with the points gathered since the page opened
    page.wait_for_function("() => !document.querySelector('.row.unavailable')", timeout=DEADLINE_MS)
    page.click('[data-range="3600"]')
    page.wait_for_function("() => parseInt(document.getElementById('chart-note').textContent) >= 3",
                           timeout=DEADLINE_MS)
    page.evaluate("document.getElementById('toast').hidden = true; window.scrollTo(0, 0)")  # toast, sticky header
    shot = artifacts / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert 20_000 < shot.stat().st_size < 300_000, shot.stat().st_size
    if os.environ.get("HARVESTER_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "dashboard.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(artifacts / "dashboard-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
    page.close()
    assert problems == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_demo_metrics_pass_promtool(demo):
    import subprocess
    import urllib.request

    with urllib.request.urlopen(demo.url("/metrics"), timeout=10) as res:
        text = res.read().decode()
    assert 'harvester_temperature_celsius{node="pi4",sensor="dht22"}' in text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
