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
    assert len(update["values"]) > 4000 and len(update["series"]) > 4000 and len(update["nodes"]) == 450
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
