"""The alert book: idempotent raise/clear, acknowledgement, persistence, a failing sink."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from actors.hub.alerts import validate_alert
from plugins.alerts import AlertBook
from tests.plugins_fixtures import Clock

ALERT = {"id": "hot", "severity": "warning", "message": "31 °C", "sensor": "dht22", "quantity": "temperature",
         "value": 31.0}


def book(tmp_path: Path | None = None, sink: Any = None) -> tuple[AlertBook, list[dict[str, Any]], Clock]:
    events: list[dict[str, Any]] = []
    clock = Clock(100.0)
    b = AlertBook("pi4", sink or events.append, clock, tmp_path / "alerts.json" if tmp_path else None)
    return b, events, clock


def test_alert_raise_is_idempotent_and_clear_needs_an_active_alert() -> None:
    b, events, clock = book()
    assert b.raise_alert("room", "1", ALERT)["state"] == "raised"
    assert b.raise_alert("room", "1", ALERT) is None
    assert b.clear_alert("room", "1", "other", "x") is None
    clock.advance(30)
    cleared = b.clear_alert("room", "1", "hot", "back to 28", 28.0)
    assert cleared is not None and cleared["since"] == 100.0 and cleared["ts"] == 130.0 and cleared["value"] == 28.0
    assert [e["state"] for e in events] == ["raised", "cleared"]
    assert set(events[0]) == {"plugin", "version", "alert", "state", "severity", "message", "node", "raised_by",
                              "sensor", "quantity", "value", "ts", "since"}


def test_acknowledge_marks_and_silences_until_a_new_raise() -> None:
    b, events, _ = book()
    b.raise_alert("room", "1", ALERT)
    assert not b.silenced("room")
    assert [e["state"] for e in b.acknowledge(plugin="room")] == ["acknowledged"]
    assert b.acknowledge(plugin="room") == []  # already acknowledged
    assert b.silenced("room")
    b.raise_alert("room", "1", {**ALERT, "id": "hotter"})
    assert not b.silenced("room")
    assert not b.silenced("other")


def test_clear_plugin_clears_all_of_its_alerts() -> None:
    b, events, _ = book()
    b.raise_alert("room", "1", ALERT)
    b.raise_alert("room", "1", {**ALERT, "id": "b"})
    b.raise_alert("cpu", "1", ALERT)
    out = b.clear_plugin("room", "plugin file removed")
    assert {e["alert"] for e in out} == {"hot", "b"} and all(e["message"] == "plugin file removed" for e in out)
    assert [a["plugin"] for a in b.active()] == ["cpu"]


def test_active_alerts_survive_a_restart(tmp_path: Path) -> None:
    b, _, _ = book(tmp_path)
    b.raise_alert("room", "1", ALERT)
    b.acknowledge("hot")
    again, events, _ = book(tmp_path)
    assert [(a["alert"], a["acknowledged"]) for a in again.active()] == [("hot", True)]
    assert again.raise_alert("room", "1", ALERT) is None and events == []


def test_a_failing_sink_is_logged_once_and_history_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    def sink(event: dict[str, Any]) -> None:
        raise OSError("outbox full")

    b, _, _ = book(sink=sink)
    with caplog.at_level(logging.ERROR, logger="plugins.alerts"):
        b.raise_alert("room", "1", ALERT)
        b.clear_alert("room", "1", "hot", "ok")
    assert len([r for r in caplog.records if "alert sink failed" in r.message]) == 1
    assert [e["state"] for e in b.history()] == ["raised", "cleared"]


def test_every_event_passes_the_hubs_wire_check() -> None:
    b, events, _ = book()
    b.raise_alert("room", "1.0.0", ALERT)
    b.acknowledge("hot")
    b.clear_alert("room", "1.0.0", "hot", "back to 28", 28.0)
    b.raise_alert("room", "1.0.0", {"id": "plugin.quarantined", "severity": "warning", "message": "x" * 500})
    b.clear_plugin("room", "plugin file removed")
    assert [e["state"] for e in events] == ["raised", "acknowledged", "cleared", "raised", "cleared"]
    for i, event in enumerate(events):
        assert validate_alert(event, "pi4", f"event {i}")["alert"] == event["alert"]
