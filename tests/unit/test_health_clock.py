"""`harvester health` says when a node's kernel clock is not synchronised, healthy or not."""

from __future__ import annotations

from typing import Any

from actors.cli.health import HealthProbe
from hal.timesync import STA_UNSYNC, TIME_ERROR, Adjtimex, parse

UNSYNCED = parse(Adjtimex(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000)).to_dict()
SYNCED = parse(Adjtimex(0, 0x0001, 50_000, 1_000)).to_dict()


class Fake:
    """An actor handle that answers call(method) from a dict."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def call(self, method: str, *args: Any) -> Any:
        return self.answers[method]


def probe(info: dict[str, Any], online: bool = True, agent_only: bool = False) -> HealthProbe:
    p = HealthProbe.__new__(HealthProbe)
    p.node, p.ns, p.expect_version, p.agent_only, p._hub_name = "pi4", "127.0.0.1:9090", None, agent_only, None
    p._agent = Fake({"info": {"version": "1.0", "role": "spoke", **info}})
    p._aggregator = Fake({"nodes": [{"name": "pi4", "online": online, "last_seen": 1_750_000_000.0}]})
    return p


def test_a_healthy_node_with_an_unsynchronised_clock_says_so():
    verdict = probe({"clock": UNSYNCED, "notes": ["3 batches stamped while the clock was not synchronised are "
                                                  "held in the outbox until it syncs"]}).check()
    assert verdict.healthy and verdict.clock_synced is False
    assert verdict.reason == (
        "pi4: online at the hub 127.0.0.1:9090, version 1.0"
        "\n  3 batches stamped while the clock was not synchronised are held in the outbox until it syncs"
        "\n  pi4: clock not synchronised (adjtimex: TIME_ERROR, STA_UNSYNC set, max error 16 s)")


def test_an_unhealthy_node_says_it_too():
    verdict = probe({"clock": UNSYNCED}, online=False).check()
    assert not verdict.healthy
    assert verdict.reason.endswith("\n  pi4: clock not synchronised (adjtimex: TIME_ERROR, STA_UNSYNC set, "
                                   "max error 16 s)")


def test_a_synchronised_or_unknown_clock_adds_nothing():
    for info in ({"clock": SYNCED}, {}, {"clock": {"synced": None, "detail": "clock state unknown"}}):
        verdict = probe(info, agent_only=True).check()
        assert verdict.healthy and verdict.reason == "pi4: agent answers (version 1.0)"
    assert probe({"clock": SYNCED}).check().clock_synced is True
