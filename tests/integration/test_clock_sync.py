"""A spoke whose kernel clock is not synchronised, against a real hub on 127.0.0.1: `harvester health`
says so, the spoke holds its readings, the hub flags it in its API and on the dashboard, and once
the clock syncs the held readings reach the hub."""

from __future__ import annotations

from actors.cli.main import main
from actors.client import connect
from tests.helpers import HOST, wait_for
from tests.integration.conftest import SPOKE_SENSORS
from tests.integration.web_client import Web


def api_node(web: Web, name: str) -> dict:
    status, _, body = web.request("GET", "/api/readings")
    assert status == 200
    return next(n for n in body["nodes"] if n["name"] == name)


def dashboard_warning(web: Web, name: str) -> str:
    status, _, body = web.request("GET", "/api/dashboard")
    assert status == 200
    return body["nodes"][name]["warning"]


def test_an_unsynchronised_spoke_is_told_held_flagged_and_released(cluster, capsys):
    pi4 = cluster.start_node("pi4", sensors=SPOKE_SENSORS)
    web = Web(cluster.web_port)
    outbox = pi4.role.outbox
    wait_for(lambda: (n := cluster.node_snapshot("pi4")) and n["online"] and n["last_seq"] > 0,
             what="pi4 pushing to the hub")
    assert api_node(web, "pi4")["clock_synced"] is True

    pi4.hal.kernel_clock().set_synced(False)  # mock mode's adjtimex: TIME_ERROR, STA_UNSYNC

    # the spoke holds what it stamps now; everything before goes out, nothing after
    wait_for(lambda: outbox.held() >= 3 and outbox.peek(50) == [], what="pi4 holding its new batches")
    held_from = min(int(s) for (s,) in outbox._db.execute("SELECT seq FROM batches WHERE clock IS NOT NULL"))
    wait_for(lambda: api_node(web, "pi4")["clock_synced"] is False, what="the hub told by pi4's hello")
    node = api_node(web, "pi4")
    assert node["online"] and node["last_seq"] < held_from
    wait_for(lambda: dashboard_warning(web, "pi4").startswith("clock not synchronised"),
             what="the dashboard flagging pi4")

    assert main(["health", "--ns", f"{HOST}:{cluster.ns_port}", "--node", "pi4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("healthy: pi4: online at the hub")
    assert "batches stamped while the clock was not synchronised are held in the outbox until it syncs" in out
    assert "pi4: clock not synchronised (adjtimex: TIME_ERROR, STA_UNSYNC set" in out
    assert cluster.node_snapshot("pi4")["last_seq"] < held_from  # still nothing of the held ones

    held_upto = max(int(s) for (s,) in outbox._db.execute("SELECT seq FROM batches WHERE clock IS NOT NULL"))
    # NTP syncs; from the REPL of a demo, the same call
    state = connect(HOST, cluster.ns_port)["pi4"]["room"].set_clock(True)
    assert state["clock"]["synced"] is True

    wait_for(lambda: cluster.node_snapshot("pi4")["last_seq"] >= held_upto, what="the held batches at the hub")
    assert outbox.held() == 0 and outbox.rejected() == []
    wait_for(lambda: api_node(web, "pi4")["clock_synced"] is True and dashboard_warning(web, "pi4") == "",
             what="the flag cleared")
    assert main(["health", "--ns", f"{HOST}:{cluster.ns_port}", "--node", "pi4"]) == 0
    assert "clock not synchronised" not in capsys.readouterr().out
