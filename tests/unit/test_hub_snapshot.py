"""Hub.snapshot and snapshot_json reuse each node's view while it holds; they must always equal
a view built from scratch (the /api/readings body, character for character)."""

from __future__ import annotations

import json
import random

import pytest

from actors.hub.state import Hub
from actors.hub.store import Store
from actors.hub.views import ONLINE_INTERVALS, node_view
from tests.clocks import ManualClock

QUANTITIES = [("temperature", "°C", 21.0), ("humidity", "%", 45.0), ("cpu_load", "%", 10.0)]


def expected(hub: Hub) -> str:
    """The body built from scratch, with no cache."""
    now = hub.test_clock()
    fresh = {"ts": now, "nodes": [node_view(hub._nodes[n], hub._latest.get(n, {}), now)[0] for n in sorted(hub._nodes)]}
    return json.dumps(fresh, allow_nan=False, ensure_ascii=False)


def check(hub: Hub, what: str) -> None:
    want = expected(hub)
    assert hub.snapshot_json() == want, what
    assert hub.snapshot_bytes() == want.encode(), what
    assert json.dumps(hub.snapshot(), allow_nan=False, ensure_ascii=False) == want, what


@pytest.fixture
def hub(tmp_path):
    clock = ManualClock(1_790_000_000.0)
    h = Hub(Store(tmp_path / "hub.sqlite3"), clock=clock)
    h.test_clock = clock  # type: ignore[attr-defined]
    yield h
    h.store.close()


def test_a_random_history_of_pushes_probes_and_time_never_shows_a_stale_part(hub):
    """Pushes (some backfilled), hellos with per-sensor limits, probes, and time steps that land
    just before, on and after the instants where online and stale flags turn."""
    rng = random.Random(7)
    clock = hub.test_clock
    seqs = {f"n{i}": 0 for i in range(6)}
    flips_checked = 0
    for step in range(600):
        node = rng.choice(sorted(seqs))
        op = rng.random()
        if op < 0.45:
            seqs[node] += 1
            q, unit, v = rng.choice(QUANTITIES)
            ts = clock.t - rng.choice([0.0, 0.5, 3.0, 30.0])
            hub.push([{"node": node, "seq": seqs[node], "readings": [
                {"sensor": rng.choice(["dht22", "monitor", "network-hub"]), "quantity": q, "unit": unit,
                 "value": v + rng.random(), "ts": ts}]}], clock.t)
        elif op < 0.55:
            hub.hello({"node": node, "role": "spoke", "profile": "native", "push_interval": rng.choice([1.0, 2.0]),
                       "stale_after": {"dht22": rng.choice([2.0, 10.0])}}, clock.t + rng.choice([0.0, 40.0]))
        elif op < 0.65:
            hub.set_reachable(node, rng.random() < 0.7, {"dht22": {"state": rng.choice(["ok", "retrying"])}})
        elif op < 0.8:
            # step to just around the next instant a flag turns: ts + limit, or last_seen + 3 push intervals
            marks = [st.last_seen + ONLINE_INTERVALS * st.push_interval for st in hub._nodes.values()
                     if st.last_seen is not None]
            future = [m for m in marks if m > clock.t]
            if future:
                clock.t = min(future) + rng.choice([-2e-3, -1e-9, 0.0, 1e-9, 2e-3])
                flips_checked += 1
        else:
            clock.t += rng.choice([0.1, 0.7, 1.5, 4.0])
        check(hub, f"step {step}")
        if step % 5 == 0:  # and a second time, mostly from the cache
            check(hub, f"step {step} (cached)")
    assert flips_checked > 30
    assert len(json.loads(hub.snapshot_json())["nodes"]) == 6


def test_parts_are_reused_until_the_node_changes(hub):
    clock = hub.test_clock
    for node in ("a", "b"):
        hub.push([{"node": node, "seq": 1, "readings": [
            {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 20.0, "ts": clock.t}]}], clock.t)
    first = hub.snapshot_json()
    cached_a, cached_b = hub._views.entries["a"], hub._views.entries["b"]
    clock.t += 0.5
    hub.push([{"node": "a", "seq": 2, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 21.0, "ts": clock.t}]}], clock.t)
    second = hub.snapshot_json()
    assert second != first and second == expected(hub)
    assert hub._views.entries["b"] is cached_b  # b did not change: its view and text were reused
    assert hub._views.entries["a"] is not cached_a


def test_a_clock_stepping_back_rebuilds_rather_than_trusting_the_cache(hub):
    clock = hub.test_clock
    hub.push([{"node": "a", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 20.0, "ts": clock.t - 100}]}],
        clock.t)
    hub.snapshot_json()
    clock.t -= 200  # NTP stepped the hub's clock back: the reading is fresh again
    check(hub, "after the step back")
    assert '"stale": false' in hub.snapshot_json()


def test_the_body_of_no_node_one_node_and_two_nodes(hub):
    """The body's head and tail are joined onto the first and last node's part: one part is both."""
    clock = hub.test_clock
    check(hub, "no node")
    assert json.loads(hub.snapshot_bytes())["nodes"] == []
    for n, node in enumerate(("a", "b"), 1):
        hub.push([{"node": node, "seq": 1, "readings": [
            {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 20.0, "ts": clock.t}]}], clock.t)
        check(hub, f"{n} node(s)")
        assert [v["name"] for v in json.loads(hub.snapshot_bytes())["nodes"]] == ["a", "b"][:n]


class _SeenLock:
    """The hub's lock, telling when a thread other than its holder asks for it."""

    def __init__(self, lock) -> None:
        import threading

        self.lock, self.asked = lock, threading.Event()
        self.holder: int | None = None

    def __enter__(self):
        import threading

        if self.holder is not None and threading.get_ident() != self.holder:
            self.asked.set()
        self.lock.acquire()
        self.holder = threading.get_ident()
        return self

    def __exit__(self, *exc) -> None:
        self.holder = None
        self.lock.release()


def test_a_reader_that_waited_for_the_lock_uses_the_views_pushes_built_meanwhile(hub):
    """A reader reads the time once it holds the lock: views that pushes built while it waited
    were built before that time, and it joins them as they are rather than building them again."""
    import threading

    clock = hub.test_clock
    hub.push([{"node": "a", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 20.0, "ts": clock.t}]}], clock.t)
    hub.snapshot_bytes()  # someone reads: pushes build their node's view at once
    hub._lock = _SeenLock(hub._lock)
    body: list[bytes] = []
    with hub._lock:
        reader = threading.Thread(target=lambda: body.append(hub.snapshot_bytes()))
        reader.start()
        assert hub._lock.asked.wait(10), "the reader never asked for the lock"
        clock.t += 1.0  # meanwhile a push of node a (its in-memory part, under the lock)
        st = hub._nodes["a"]
        st.version += 1
        st.last_seen = clock.t
        [built] = hub._views.refresh(["a"], hub._nodes, hub._latest, clock.t)
    reader.join(10)
    assert hub._views.entries["a"] is built and body == [expected(hub).encode()]


def _health(node: str, state: str = "ok", pending: int = 0) -> dict:
    """An agent's fleet_health() answer, as the prober passes it on."""
    return {f"harvester.{node}.dht22": {"state": state, "last_error": None, "uptime_s": 12.5, "calls": 3},
            "outbox": {"pending_batches": pending, "held_in_memory": 0, "dropped_batches": 0, "disk_full": False,
                       "disk_error": None, "held_unsynced": 0, "rejected_batches": 0}}


def test_a_probe_that_finds_what_the_last_one_found_leaves_the_view_as_it_was(hub):
    """A thousand spokes are asked for their health about 33 times a second; an answer the hub
    already shows (an uptime that moved is not shown) must not make the view be built again."""
    clock = hub.test_clock
    hub.push([{"node": "a", "seq": 1, "readings": [
        {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 20.0, "ts": clock.t}]}], clock.t)
    hub.set_reachable("a", True, _health("a"))
    hub.snapshot_bytes()
    cached = hub._views.entries["a"]
    clock.t += 0.5
    again = _health("a")
    again["harvester.a.dht22"]["uptime_s"] = 13.0
    hub.set_reachable("a", True, again)
    check(hub, "after the same answer")
    assert hub._views.entries["a"] is cached
    hub.set_reachable("a", True, _health("a", pending=4))  # the outbox is shown: this is a change
    check(hub, "after a changed outbox")
    assert hub._views.entries["a"] is not cached
    assert json.loads(hub.snapshot_bytes())["nodes"][0]["outbox"]["pending_batches"] == 4


def test_what_changes_a_node_builds_its_view_so_that_a_reader_only_joins_views(hub, monkeypatch):
    """Probes, hellos and pushes build and encode the changed node's view while someone reads
    the views: the next request builds nothing (it took 20-60 ms when it built hundreds)."""
    import actors.hub.views as views_module

    clock = hub.test_clock
    for node in ("a", "b", "c"):
        hub.push([{"node": node, "seq": 1, "readings": [
            {"sensor": "dht22", "quantity": "temperature", "unit": "°C", "value": 20.0, "ts": clock.t}]}], clock.t)
    hub.snapshot_bytes()  # someone reads
    clock.t += 0.25
    hub.set_reachable("a", False)
    hub.set_reachable("b", True, _health("b", state="retrying"))
    hub.hello({"node": "c", "role": "spoke", "profile": "native", "push_interval": 2.0}, clock.t)
    assert all(hub._views.entries[n].data is not None for n in ("a", "b", "c")), "left unencoded for the reader"
    built: list[str] = []
    real = views_module.node_view
    monkeypatch.setattr(views_module, "node_view", lambda st, *a: built.append(st.name) or real(st, *a))
    body = json.loads(hub.snapshot_bytes())
    assert built == []
    a, b, c = body["nodes"]
    assert (a["reachable"], b["actors"]["dht22"]["state"], c["push_interval"]) == (False, "retrying", 2.0)
    check(hub, "after the changes")
