"""Several hubs on the web app: /metrics' harvester_cluster_* families and the dashboard's Hubs panel.

A real Hub over a real Store behind the real app; `hub.cluster` is a test double of the Raft group
(its view() is the body of GET /api/cluster). A single hub (cluster None) shows neither."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.unit.web_app import app_fixtures, dashboard, metrics
from web import view

NO_QUORUM = "no majority: acknowledgements and singleton jobs wait until more hubs are up"
VIEW = {"self": "hub1", "leader": "hub2", "term": 4, "has_quorum": True, "members": [
    {"name": "hub1", "address": "127.0.0.1:9090", "online": True, "role": "follower", "lag_s": 1.5},
    {"name": "hub2", "address": "127.0.0.1:9091", "online": True, "role": "leader", "lag_s": 0.0, "error": None},
    {"name": "hub3", "address": "127.0.0.1:9092", "online": False, "role": "unknown", "lag_s": 42.0,
     "error": "ConnectionRefusedError: <refused> & gone"}]}


class FakeGroup:
    """Stands in for actors.hub.group's Raft member: only view() is read by the web app."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def view(self) -> dict[str, Any]:
        return copy.deepcopy(self.body)


hub, client = app_fixtures(node="hub1")


def hub_rows(html: str) -> dict[str, str]:
    """The Hubs panel's rows by hub name (the markup of each <tr data-hub>)."""
    return dict(re.findall(r'<tr class="[^"]*" data-hub="([^"]+)">(.*?)</tr>', html, re.S))


def test_metrics_describe_the_hubs_group(client, hub):
    hub.cluster = FakeGroup(VIEW)
    text, samples = metrics(client)
    assert {k: v for k, v in samples.items() if k[0].startswith("harvester_cluster_")} == {
        ("harvester_cluster_term", ""): "4",
        ("harvester_cluster_has_quorum", ""): "1",
        ("harvester_cluster_leader", 'hub="hub1"'): "0",
        ("harvester_cluster_leader", 'hub="hub2"'): "1",
        ("harvester_cluster_leader", 'hub="hub3"'): "0",
        ("harvester_cluster_member_online", 'hub="hub1"'): "1",
        ("harvester_cluster_member_online", 'hub="hub2"'): "1",
        ("harvester_cluster_member_online", 'hub="hub3"'): "0",
        ("harvester_cluster_lag_seconds", 'hub="hub1"'): "1.5",
        ("harvester_cluster_lag_seconds", 'hub="hub2"'): "0.0",
        ("harvester_cluster_lag_seconds", 'hub="hub3"'): "42.0",
    }
    for name in ("term", "has_quorum", "leader", "member_online", "lag_seconds"):
        assert f"# TYPE harvester_cluster_{name} gauge\n" in text
        assert re.search(rf"^# HELP harvester_cluster_{name} \S", text, re.M)
    # each family's samples are grouped under its own HELP/TYPE
    lines = text.splitlines()
    at = lines.index("# TYPE harvester_cluster_leader gauge")
    assert lines[at + 1:at + 4] == ['harvester_cluster_leader{hub="hub1"} 0', 'harvester_cluster_leader{hub="hub2"} 1',
                                    'harvester_cluster_leader{hub="hub3"} 0']


def test_metrics_without_a_majority_or_a_leader(client, hub):
    hub.cluster = FakeGroup({**VIEW, "leader": None, "has_quorum": False, "term": 5})
    _, samples = metrics(client)
    assert samples[("harvester_cluster_has_quorum", "")] == "0"
    assert samples[("harvester_cluster_term", "")] == "5"
    assert [samples[("harvester_cluster_leader", f'hub="hub{i}"')] for i in (1, 2, 3)] == ["0", "0", "0"]


def test_a_single_hub_exports_no_cluster_metric_and_nothing_else_changes(client, hub):
    single, _ = metrics(client)
    assert "harvester_cluster" not in single
    hub.cluster = FakeGroup(VIEW)
    several, _ = metrics(client)
    kept = [line for line in several.splitlines() if "harvester_cluster_" not in line]
    assert "\n".join(kept) + "\n" == single


def test_the_dashboard_shows_a_hubs_panel_with_one_row_per_hub(client, hub):
    hub.cluster = FakeGroup(VIEW)
    status, _, html = client.get("/")
    assert status == 200
    section = re.search(r'<section id="hubs"[^>]*>', html).group(0)
    assert "hidden" not in section
    assert "<h2>Hubs</h2>" in html and "leader hub2 · term 4" in html
    rows = hub_rows(html)
    assert list(rows) == ["hub1", "hub2", "hub3"]
    assert "<strong>hub1</strong> · this hub" in rows["hub1"] and "this hub" not in rows["hub2"]
    assert '<td class="role-leader">leader</td>' in rows["hub2"]
    assert '<td class="role-follower">follower</td>' in rows["hub1"]
    assert '<td class="ok" title="">online</td>' in rows["hub1"]
    assert '<td data-key="cluster/hub1/lag">up to date</td>' in rows["hub1"]
    assert '<td data-key="cluster/hub2/lag">up to date</td>' in rows["hub2"]
    assert '<td data-key="cluster/hub3/lag">copy behind by 42 s</td>' in rows["hub3"]
    # the peer's error is escaped into the title of its state
    assert 'title="ConnectionRefusedError: &lt;refused&gt; &amp; gone">down</td>' in rows["hub3"]
    assert '<tr class="down" data-hub="hub3">' in html
    assert NO_QUORUM not in html


def test_the_panel_says_when_the_hubs_have_no_majority(client, hub):
    hub.cluster = FakeGroup({**VIEW, "leader": None, "has_quorum": False})
    _, _, html = client.get("/")
    assert f'<p class="warning" data-quorum>{NO_QUORUM}</p>' in html
    assert "no leader · term 4" in html
    _, _, fragment = client.get("/fragment/hubs")
    assert NO_QUORUM in fragment


def test_hub_names_are_escaped(client, hub):
    evil = '<img src=x onerror="alert(1)">'
    body = copy.deepcopy(VIEW)
    body["members"][2]["name"] = evil
    hub.cluster = FakeGroup(body)
    _, _, html = client.get("/")
    assert evil not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_live_update_carries_the_lag_and_a_signature_of_the_panel(client, hub):
    group = FakeGroup(copy.deepcopy(VIEW))
    hub.cluster = group
    live = client.app.config["harvester.context"].dashboard.live
    d = dashboard(client)
    assert d["values"]["cluster/hub3/lag"] == {"text": "copy behind by 42 s"}
    assert d["values"]["cluster/hub1/lag"] == {"text": "up to date"}
    status, headers, fragment = client.get("/fragment/hubs")
    assert status == 200 and headers["x-harvester-sig"] == d["hubs_sig"] != ""
    assert list(hub_rows(fragment)) == ["hub1", "hub2", "hub3"]
    _, _, page = client.get("/")
    assert f'data-sig="{d["hubs_sig"]}"' in page

    group.body["members"][2]["lag_s"] = 61.0  # only the lag: updated in place, same signature
    live.changed()
    d2 = dashboard(client)
    assert d2["values"]["cluster/hub3/lag"] == {"text": "copy behind by 61 s"} and d2["hubs_sig"] == d["hubs_sig"]

    group.body["members"][2].update(online=True, role="follower", error=None)  # hub3 is back: the panel reloads
    live.changed()
    assert dashboard(client)["hubs_sig"] != d["hubs_sig"]


def test_a_single_hub_shows_no_panel(client, hub):
    assert hub.cluster is None
    _, _, html = client.get("/")
    assert re.search(r'<section id="hubs" class="hubs" aria-label="Hubs" data-sig="" hidden>\s*</section>', html)
    assert "<h2>Hubs</h2>" not in html and "data-hub=" not in html
    d = dashboard(client)
    assert d["hubs_sig"] == "" and not [k for k in d["values"] if k.startswith("cluster/")]
    status, headers, fragment = client.get("/fragment/hubs")
    assert status == 200 and headers["x-harvester-sig"] == "" and fragment.strip() == ""


def test_a_group_of_one_hub_shows_no_panel_either():
    assert view.hubs_view({"self": "hub1", "leader": "hub1", "term": 1, "has_quorum": True,
                           "members": [VIEW["members"][0]]}) is None
    assert view.hubs_signature(None) == ""


@pytest.mark.parametrize(("lag", "text"), [(0.0, "up to date"), (4.99, "up to date"), (5.0, "copy behind by 5 s"),
                                           (42.0, "copy behind by 42 s"), (None, "not measured yet")])
def test_lag_text(lag, text):
    assert view.lag_text(lag) == text
