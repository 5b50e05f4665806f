"""The hub's plugins see what spokes pushed (PushedQueue), every batch the hub stored."""

from __future__ import annotations

from actors.hub.role import PushedQueue
from actors.hub.state import Hub
from actors.hub.store import Store
from hal.readings import Reading
from tests.clocks import ManualClock

NOW = 1_790_000_000.0


def test_hub_plugins_get_a_declared_quantity_and_every_batch_after_it(tmp_path):
    """A node's own quantity passes the hub's checks with the node's declaration; rebuilt for the
    hub's plugins, it was checked again against the built-ins alone, refused, and the batches
    queued after it in that second never reached a plugin."""
    hub = Hub(Store(tmp_path / "hub.sqlite3"), ManualClock(NOW))
    evaluated: list[list[Reading]] = []
    queue = PushedQueue(evaluated.append)
    hub.on_batch = queue.put
    hub.hello({"node": "tank1", "quantities": [{"name": "level", "unit": "cm", "low": 0, "high": 500}]})
    hub.push([{"node": "tank1", "seq": 1, "readings": [
        {"sensor": "tank", "quantity": "level", "unit": "cm", "value": 120.0, "ts": NOW - 1}]}])
    hub.push([{"node": "pi4", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 21.5, "ts": NOW - 1},
        {"sensor": "dht22", "quantity": "humidity", "unit": "%", "value": 40.0, "ts": NOW - 1}]}])
    queue.evaluate()
    assert [[(r.node, r.sensor, r.quantity, r.value, r.unit, r.ts, r.quality, r.reason) for r in batch]
            for batch in evaluated] == [
        [("tank1", "tank", "level", 120.0, "cm", NOW - 1, "ok", None)],
        [("pi4", "dht22", "temperature", 21.5, "°C", NOW - 1, "ok", None),
         ("pi4", "dht22", "humidity", 40.0, "%", NOW - 1, "ok", None)]]
    assert all(type(r) is Reading for batch in evaluated for r in batch)
    assert evaluated[1][0] == Reading("pi4", "dht22", "temperature", 21.5, "°C", NOW - 1)  # as a checked one
    hub.store.close()


def test_a_trusted_reading_is_the_reading_the_checked_constructor_builds():
    fields = ("pi4", "dht22", "temperature", 21.5, "°C", NOW, "calibrating", "burn-in: 12 min left")
    trusted, checked = Reading.trusted(*fields), Reading(*fields)
    assert trusted == checked and hash(trusted) == hash(checked) and repr(trusted) == repr(checked)
    assert Reading.trusted(*fields[:6]) == Reading(*fields[:6])  # quality and reason default
