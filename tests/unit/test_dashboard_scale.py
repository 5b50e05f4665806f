"""The dashboard's update at fleet scale: encoded in pieces, yet the very text json.dumps gives."""

from __future__ import annotations

import hashlib
import json
import time

from actors.hub.state import Hub
from actors.hub.store import Store
from web import view
from web.dashboard import Dashboard, encode_in_pieces
from web.upstream import Upstream

QUANTITIES = [("temperature", "°C", 21.0), ("humidity", "%", 45.0), ("pressure", "hPa", 1012.0),
              ("cpu_load", "%", 10.0), ("memory_used", "MB", 200.0)]


def test_the_update_of_a_large_fleet_encodes_in_pieces_to_exactly_json_dumps(tmp_path):
    hub = Hub(Store(tmp_path / "hub.sqlite3"))
    now = time.time()
    for i in range(450):  # more nodes, rows and series than two pieces each
        node = f"sim{i:04d}"
        hub.hello({"node": node, "push_interval": 1.0, "boot": "b"})
        hub.push([{"node": node, "seq": 1, "readings": [
            {"sensor": f"s{j}", "quantity": q, "unit": u, "value": v + i / 70, "ts": now - j}
            for j, (q, u, v) in enumerate(QUANTITIES * 2)]}])
    dash = Dashboard(hub, Upstream(None))
    update = dash.update()
    assert len(update["values"]) > 4000 and len(update["nodes"]) == 450 and "series" not in update
    sig, series = dash.series()
    assert update["series_sig"] == sig and len(series) == 4500
    assert json.loads(dash.series_bytes()) == {"sig": sig, "series": series}
    assert encode_in_pieces(update) == json.dumps(update, allow_nan=False, ensure_ascii=False)
    assert json.loads(dash.live.get())["nodes"].keys() == update["nodes"].keys()
    # the structure's signature, hashed card by card, is the digest of the whole list as before
    cards = dash.model()["cards"]
    shape = [(c["name"], c["role"], c["profile"], c["leds"], c["buzzer"],
              [(s["title"], [(r["key"], r["bar"] is None) for r in s["rows"]]) for s in c["sections"]]) for c in cards]
    assert view.signature(cards) == hashlib.sha1(json.dumps(shape).encode()).hexdigest()[:12]
    dash.live.close()
    hub.store.close()


def test_small_values_and_odd_keys_encode_as_json_dumps_does():
    for value in ({}, [], {"a": [1, 2]}, {1: "x", "b": list(range(500))}, list(range(1000)),
                  {"k": {str(i): i for i in range(700)}, "l": [{"x": i} for i in range(401)]}, "text", 1.5, None):
        assert encode_in_pieces(value) == json.dumps(value, allow_nan=False, ensure_ascii=False)


def test_the_series_list_is_rebuilt_only_when_a_series_appears_or_changes_its_unit(tmp_path):
    hub = Hub(Store(tmp_path / "hub.sqlite3"))
    now = time.time()
    hub.push([{"node": "pi4", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 21.0, "ts": now}]}])
    dash = Dashboard(hub, Upstream(None))
    sig, series = dash.series()
    assert series == [{"id": "pi4/dht22/temperature", "label": "pi4 · dht22 · Temperature", "unit": "°C"}]
    hub.push([{"node": "pi4", "seq": 2, "readings": [  # new values, the same series: the very same list
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 22.0, "ts": now + 1}]}])
    assert dash.series() == (sig, series) and dash.series()[1] is series and dash.update()["series_sig"] == sig
    hub.push([{"node": "pi4", "seq": 3, "readings": [  # a new series: a new list and signature
        {"sensor": "dht22", "quantity": "humidity", "unit": "%", "value": 40.0, "ts": now + 2}]}])
    sig2, series2 = dash.series()
    assert sig2 != sig and [s["id"] for s in series2] == ["pi4/dht22/humidity", "pi4/dht22/temperature"]
    hub.hello({"node": "pi4", "quantities": [{"name": "level", "unit": "cm", "low": 0, "high": 500}]})
    hub.push([{"node": "pi4", "seq": 4, "readings": [
        {"sensor": "tank", "quantity": "level", "unit": "cm", "value": 120.0, "ts": now + 3}]}])
    sig3, _ = dash.series()
    hub.hello({"node": "pi4", "quantities": [{"name": "level", "unit": "mm", "low": 0, "high": 5000}]})
    hub.push([{"node": "pi4", "seq": 5, "readings": [  # the same series in another unit: a new signature
        {"sensor": "tank", "quantity": "level", "unit": "mm", "value": 1200.0, "ts": now + 4}]}])
    sig4, series4 = dash.series()
    assert sig4 not in (sig3, sig2) and series4[-1] == {"id": "pi4/tank/level", "label": "pi4 · tank · level",
                                                          "unit": "mm"}
    dash.live.close()
    hub.store.close()
