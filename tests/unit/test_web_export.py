"""Export targets on the web app: GET /api/exports, /metrics' harvester_export_* families and the
dashboard's Exports panel.

A real Hub over a real Store behind the real app; `hub.exporters` holds test doubles of
actors.hub.export.Exporter (the web app reads only their name and status()). A hub without
[[export]] targets shows none of it."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

from actors.hub.state import Hub
from tests.unit.web_app import app_fixtures, dashboard, metrics, serving
from web import view

PROMTOOL = shutil.which("promtool")
SINCE = 1764763200.0  # when the failing targets' errors began
OK = {"name": "influx", "url": "http://influx.lan:8086/api/v2/write", "state": "ok", "sent": 12345, "backlog": 0,
      "behind_s": 0.0, "lost": 0, "last_error": None, "error_since": None, "last_ok": SINCE + 30}
RETRYING = {"name": "vm", "url": "https://vm.lan:8428/write", "state": "retrying", "sent": 99, "backlog": 1500,
            "behind_s": 65.2, "lost": 0, "last_error": "HTTP 503 Service Unavailable", "error_since": SINCE,
            "last_ok": SINCE - 5}
STOPPED = {"name": "cloud", "url": "https://cloud.example/api/v2/write", "state": "stopped", "sent": 0,
           "backlog": 20000, "behind_s": 7200.0, "lost": 3,
           "last_error": "HTTP 401 Unauthorized: <b>bad token</b> & more", "error_since": SINCE + 60, "last_ok": None}
STANDBY = {**OK, "name": "standby", "state": "standby", "sent": 7, "backlog": 2, "behind_s": 1.0}


class FakeExporter:
    """Stands in for actors.hub.export.Exporter: only `name` and status() are read by the web app."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.body = copy.deepcopy(status)
        self.name = status["name"]

    def status(self) -> dict[str, Any]:
        return copy.deepcopy(self.body)


hub, client = app_fixtures(node="hub")


def exporting(hub: Hub, *statuses: dict[str, Any]) -> list[FakeExporter]:
    hub.exporters = [FakeExporter(s) for s in statuses]
    return hub.exporters


def export_rows(html: str) -> dict[str, str]:
    """The Exports panel's rows by target name (the markup of each <tr data-export>)."""
    return dict(re.findall(r'<tr data-export="([^"]+)">(.*?)</tr>', html, re.S))


def since(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


# -- GET /api/exports ---------------------------------------------------------------------------

def test_api_lists_every_targets_status(client, hub):
    exporting(hub, OK, RETRYING, STOPPED)
    status, headers, text = client.get("/api/exports")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(text) == {"exports": [OK, RETRYING, STOPPED]}


def test_api_without_targets_is_an_empty_list(client, hub):
    assert hub.exporters == []
    status, _, text = client.get("/api/exports")
    assert status == 200 and json.loads(text) == {"exports": []}


def test_api_needs_the_token_when_reads_are_not_public(hub, tmp_path):
    exporting(hub, OK)
    with serving(hub, tmp_path, public_read=False) as client:
        status, _, text = client.get("/api/exports")
        assert status == 401 and "influx" not in text
        # the page without the token renders (no panel) rather than failing
        status, _, html = client.get("/")
        assert status == 200 and re.search(r'<section id="exports"[^>]*data-sig="" hidden>\s*</section>', html)


# -- /metrics -------------------------------------------------------------------------------------

def test_metrics_describe_each_target(client, hub):
    exporting(hub, OK, RETRYING, STOPPED, STANDBY)
    text, samples = metrics(client)
    got = {k: v for k, v in samples.items() if k[0].startswith("harvester_export_")}
    expected = {}
    for s, up, stopped in ((OK, "1", "0"), (RETRYING, "0", "0"), (STOPPED, "0", "1"), (STANDBY, "1", "0")):
        label = f'target="{s["name"]}"'
        expected.update({("harvester_export_sent_total", label): str(s["sent"]),
                         ("harvester_export_backlog", label): str(s["backlog"]),
                         ("harvester_export_behind_seconds", label): repr(s["behind_s"]),
                         ("harvester_export_lost_total", label): str(s["lost"]),
                         ("harvester_export_up", label): up,
                         ("harvester_export_stopped", label): stopped})
    assert got == expected
    kinds = {"sent_total": "counter", "backlog": "gauge", "behind_seconds": "gauge", "lost_total": "counter",
             "up": "gauge", "stopped": "gauge"}
    for name, kind in kinds.items():
        assert f"# TYPE harvester_export_{name} {kind}\n" in text
        assert re.search(rf"^# HELP harvester_export_{name} \S", text, re.M)
    # each family's samples are grouped under its own HELP/TYPE, in the targets' order
    lines = text.splitlines()
    at = lines.index("# TYPE harvester_export_up gauge")
    assert lines[at + 1:at + 5] == ['harvester_export_up{target="influx"} 1', 'harvester_export_up{target="vm"} 0',
                                    'harvester_export_up{target="cloud"} 0', 'harvester_export_up{target="standby"} 1']


def test_metrics_escape_the_target_label(client, hub):
    exporting(hub, {**OK, "name": 'a"b\\c\nd'})
    _, samples = metrics(client)
    assert samples[("harvester_export_up", 'target="a\\"b\\\\c\\nd"')] == "1"


def test_a_hub_without_targets_exports_no_export_metric_and_nothing_else_changes(client, hub):
    none, _ = metrics(client)
    assert "harvester_export" not in none
    exporting(hub, OK, STOPPED)
    some, _ = metrics(client)
    kept = [line for line in some.splitlines() if "harvester_export_" not in line]
    assert "\n".join(kept) + "\n" == none


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
def test_promtool_accepts_the_exposition(client, hub):
    exporting(hub, OK, RETRYING, STOPPED, STANDBY, {**OK, "name": 'a"b\\c\nd'})
    text, _ = metrics(client)
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


# -- the Exports panel --------------------------------------------------------------------------------

def test_the_dashboard_shows_an_exports_panel_with_one_row_per_target(client, hub):
    exporting(hub, OK, RETRYING, STOPPED)
    status, _, html = client.get("/")
    assert status == 200
    section = re.search(r'<section id="exports"[^>]*>', html).group(0)
    assert "hidden" not in section
    assert "<h2>Exports</h2>" in html
    assert '<span class="muted" data-key="exports/heading">3 targets · 1 stopped · 1 retrying</span>' in html
    rows = export_rows(html)
    assert list(rows) == ["influx", "vm", "cloud"]
    # the panel sits right after the Hubs panel
    assert html.index('<section id="hubs"') < html.index('<section id="exports"') < html.index('<section id="nodes"')


def test_a_target_that_sends(client, hub):
    exporting(hub, OK)
    _, _, html = client.get("/")
    row = export_rows(html)["influx"]
    assert '<strong>influx</strong><span class="url muted">http://influx.lan:8086/api/v2/write</span>' in row
    assert '<span class="export-state ok" data-key="export:influx/state" title="the engine takes the readings">' \
           'sending</span>' in row
    assert '<td class="num" data-key="export:influx/sent">12 345</td>' in row
    assert '<span data-key="export:influx/waiting">up to date</span>' in row
    assert '<span class="error" data-key="export:influx/error" hidden></span>' in row
    assert '<span class="warning" data-key="export:influx/lost" hidden></span>' in row
    assert "1 target · sending" in html


def test_a_target_that_retries(client, hub):
    exporting(hub, RETRYING)
    _, _, html = client.get("/")
    row = export_rows(html)["vm"]
    assert '<span class="export-state warn" data-key="export:vm/state"' in row and ">retrying</span>" in row
    assert '<span data-key="export:vm/waiting">1 500 behind (oldest 65 s)</span>' in row
    assert (f'<span class="error" data-key="export:vm/error">HTTP 503 Service Unavailable (since {since(SINCE)})'
            '</span>') in row
    assert '<span class="warning" data-key="export:vm/lost" hidden></span>' in row
    assert "1 target · 1 retrying" in html


def test_a_stopped_target_that_lost_readings(client, hub):
    exporting(hub, STOPPED)
    _, _, html = client.get("/")
    row = export_rows(html)["cloud"]
    assert '<span class="export-state bad" data-key="export:cloud/state"' in row and ">stopped</span>" in row
    assert "restart the hub" in row  # the state's title says what to do
    assert '<span data-key="export:cloud/waiting">20 000 behind (oldest 2 h)</span>' in row
    assert ('<span class="warning" data-key="export:cloud/lost">3 readings deleted before they were sent</span>'
            in row)
    # the engine's answer is escaped
    assert (f'<span class="error" data-key="export:cloud/error">HTTP 401 Unauthorized: &lt;b&gt;bad token&lt;/b&gt; '
            f'&amp; more (since {since(SINCE + 60)})</span>') in row
    assert "<b>bad token</b>" not in html


def test_target_names_are_escaped(client, hub):
    evil = '<img src=x onerror="alert(1)">'
    exporting(hub, {**OK, "name": evil})
    _, _, html = client.get("/")
    assert evil not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_a_hub_without_targets_shows_no_panel(client, hub):
    _, _, html = client.get("/")
    assert re.search(r'<section id="exports" class="exports" aria-label="Exports" data-sig="" hidden>\s*</section>',
                     html)
    assert "<h2>Exports</h2>" not in html and "data-export=" not in html
    d = dashboard(client)
    assert d["exports_sig"] == "" and not [k for k in d["values"] if k.startswith("export")]


def test_live_update_carries_the_values_and_a_signature_of_the_targets(client, hub):
    influx, vm = exporting(hub, OK, RETRYING)
    live = client.app.config["harvester.context"].dashboard.live
    d = dashboard(client)
    assert d["exports_sig"] != ""
    assert d["values"]["exports/heading"] == {"text": "2 targets · 1 retrying"}
    assert d["values"]["export:influx/sent"] == {"text": "12 345"}
    assert d["values"]["export:vm/waiting"] == {"text": "1 500 behind (oldest 65 s)"}
    assert d["values"]["export:vm/state"]["text"] == "retrying"
    assert d["values"]["export:vm/state"]["cls"] == "export-state warn"
    assert d["values"]["export:vm/error"] == {"text": f"HTTP 503 Service Unavailable (since {since(SINCE)})",
                                              "hidden": False}
    assert d["values"]["export:vm/lost"] == {"text": "", "hidden": True}
    _, _, page = client.get("/")
    assert f'data-sig="{d["exports_sig"]}"' in page

    # the engine is back and retention deleted some readings meanwhile: updated in place, same signature
    vm.body.update(state="ok", last_error=None, error_since=None, backlog=0, behind_s=0.0, sent=1599, lost=12)
    live.changed()
    d2 = dashboard(client)
    assert d2["exports_sig"] == d["exports_sig"]
    assert d2["values"]["export:vm/state"] == {"text": "sending", "cls": "export-state ok",
                                               "title": "the engine takes the readings"}
    assert d2["values"]["export:vm/error"] == {"text": "", "hidden": True}
    assert d2["values"]["export:vm/lost"] == {"text": "12 readings deleted before they were sent", "hidden": False}
    assert d2["values"]["export:vm/sent"] == {"text": "1 599"}
    assert d2["values"]["exports/heading"] == {"text": "2 targets · all sending"}

    # other targets (a hub restarted with other settings): the panel is rendered again
    exporting(hub, OK)
    live.changed()
    assert dashboard(client)["exports_sig"] not in ("", d["exports_sig"])


# -- the view functions ---------------------------------------------------------------------------

def test_exports_view():
    assert view.exports_view([]) is None
    assert view.exports_signature(None) == "" and view.exports_values(None) == {}
    assert view.exports_view([STOPPED]) == {"heading": "1 target · 1 stopped", "targets": [{
        "name": "cloud", "url": "https://cloud.example/api/v2/write", "state": "stopped", "state_text": "stopped",
        "state_cls": "bad", "state_title": view.EXPORT_STATES["stopped"][2], "sent": "0",
        "waiting": "20 000 behind (oldest 2 h)", "lost": "3 readings deleted before they were sent",
        "error": f"HTTP 401 Unauthorized: <b>bad token</b> & more (since {since(SINCE + 60)})",
        "key": "export:cloud"}]}


def test_a_standby_hub_says_another_hub_sends():
    exports = view.exports_view([STANDBY])
    assert exports["heading"] == "1 target · another hub sends"
    row = exports["targets"][0]
    assert (row["state_text"], row["state_cls"], row["waiting"]) == ("standby", "standby", "2 behind (oldest 1 s)")
    assert "another hub" in row["state_title"]


def test_export_row_edge_cases():
    one_lost = view.export_row({**OK, "lost": 1})
    assert one_lost["lost"] == "1 reading deleted before they were sent"
    no_since = view.export_row({**RETRYING, "error_since": None})
    assert no_since["error"] == "HTTP 503 Service Unavailable"
    odd = view.export_row({**OK, "state": "starting"})
    assert (odd["state_text"], odd["state_cls"]) == ("starting", "unknown")


def test_the_signature_follows_the_targets_not_their_state():
    a = view.exports_signature(view.exports_view([OK, RETRYING]))
    assert a == view.exports_signature(view.exports_view([{**OK, "sent": 1}, {**RETRYING, "state": "stopped"}]))
    assert a != view.exports_signature(view.exports_view([OK]))
    assert a != view.exports_signature(view.exports_view([OK, {**RETRYING, "url": "https://elsewhere/write"}]))


@pytest.mark.parametrize(("seconds", "text"), [(0.0, "0 s"), (65.2, "65 s"), (89.0, "89 s"), (90.0, "2 min"),
                                               (7200.0, "2 h"), (3 * 86400.0, "3 d"), (-3.0, "0 s")])
def test_wait_text(seconds, text):
    assert view.wait_text(seconds) == text


def test_count_text():
    assert [view.count_text(n) for n in (0, 999, 1000, 1234567)] == ["0", "999", "1 000", "1 234 567"]
