"""Several hubs: the seq-interval holdings (SeqSet), the store's kept batches, floors and
order-free alert episodes, the cluster-agreed job runs and summaries, and the spoke's
majority-deletion pusher (with fake aggregators in place of Pyro5)."""

from __future__ import annotations

import json
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from Pyro5.errors import CommunicationError

from actors.hub.holdings import SeqSet, check_intervals
from actors.hub.store import Batch, Row, Store
from actors.spoke.outbox import Outbox
from actors.spoke.pusher import Pusher
from hal.readings import Reading

DAY = 86400.0
T0 = 1_700_000_000.0


def row(ts: float, value: float = 21.0, sensor: str = "dht22") -> Row:
    return Row(sensor, "temperature", value, "C", ts, "ok", None)


def batch(node: str, seq: int, ts: float = T0, alerts: list | None = None) -> Batch:
    return Batch(node, seq, [row(ts, 20.0 + seq), row(ts + 1, 30.0 + seq, "bme680")], alerts or [])


def commit(store: Store, *batches: Batch, received: float = T0) -> list[tuple[str, int]]:
    return store.commit_batches(list(batches), received, {b.node: received for b in batches})


def event(state: str, since: float, ts: float | None = None, alert: str = "hot") -> dict:
    return {"raised_by": "pi", "plugin": "thresholds", "alert": alert, "state": state, "severity": "warning",
            "message": state, "node": "pi", "sensor": "dht22", "quantity": "temperature", "value": 30.0,
            "ts": since if ts is None else ts, "since": since}


@pytest.fixture
def kept(tmp_path):
    store = Store(tmp_path / "hub.sqlite3", keep_batches=True)
    yield store
    store.close()


# -- SeqSet ---------------------------------------------------------------------------------
def test_seqset_add_and_add_range_merge_adjacent_and_overlapping():
    s = SeqSet()
    for seq in (1, 2, 3, 5):
        s.add(seq)
    assert s.intervals() == [(1, 3), (5, 5)]
    s.add(4)  # fills the gap: both sides merge
    assert s.intervals() == [(1, 5)]
    for lo, hi in ((8, 10), (12, 14), (20, 20)):
        s.add_range(lo, hi)
    assert s.intervals() == [(1, 5), (8, 10), (12, 14), (20, 20)]
    s.add_range(9, 13)  # overlaps two intervals
    assert s.intervals() == [(1, 5), (8, 14), (20, 20)]
    s.add_range(6, 7)  # adjacent on both sides
    assert s.intervals() == [(1, 14), (20, 20)]
    s.add_range(3, 2)  # empty range: no change
    s.add(20)  # already held
    assert s.intervals() == [(1, 14), (20, 20)]
    s.add_range(16, 30), s.add(15)
    assert s.intervals() == [(1, 30)]
    assert SeqSet([(5, 6), (1, 2), (3, 4)]).intervals() == [(1, 6)]


def test_seqset_contains_len_iter_and_maximum():
    s = SeqSet([(3, 5), (8, 8), (10, 12)])
    assert [n for n in range(15) if n in s] == [3, 4, 5, 8, 10, 11, 12]
    assert len(s) == 7 and list(s) == [3, 4, 5, 8, 10, 11, 12]
    assert s.maximum() == 12 and bool(s)
    assert s == SeqSet([(10, 12), (3, 5), (8, 8)]) and s != SeqSet([(3, 5)]) and s != [(3, 5)]
    empty = SeqSet()
    assert not empty and len(empty) == 0 and empty.maximum() == 0 and 1 not in empty


def test_seqset_remove_below():
    s = SeqSet([(1, 3), (5, 9), (12, 12)])
    s.remove_below(0)
    assert s.intervals() == [(1, 3), (5, 9), (12, 12)]
    s.remove_below(4)
    assert s.intervals() == [(5, 9), (12, 12)]
    s.remove_below(6)  # cuts into an interval
    assert s.intervals() == [(7, 9), (12, 12)] and 6 not in s and 7 in s
    s.remove_below(9)
    assert s.intervals() == [(12, 12)]
    s.remove_below(100)
    assert s.intervals() == [] and s.maximum() == 0


def test_seqset_missing_from_examples():
    s = SeqSet([(3, 5), (8, 9)])
    assert s.missing_from([(1, 10)]) == [(1, 2), (6, 7), (10, 10)]
    assert s.missing_from([(1, 10)], floor=6) == [(7, 7), (10, 10)]
    assert s.missing_from([(4, 5), (8, 8)]) == []
    assert s.missing_from([(1, 2), (6, 7), (9, 11)]) == [(1, 2), (6, 7), (10, 11)]
    assert s.missing_from([(1, 4)], floor=4) == []
    assert SeqSet().missing_from([(2, 4), (6, 6)], floor=2) == [(3, 4), (6, 6)]
    assert s.missing_from([]) == []


OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 60)),
    st.tuples(st.just("range"), st.integers(1, 60), st.integers(0, 8)),
    st.tuples(st.just("floor"), st.integers(0, 40))), max_size=40)


def canonical(intervals: list[tuple[int, int]], adjacent_ok: bool) -> bool:
    """Sorted, disjoint, lo <= hi (and not touching unless adjacent_ok)."""
    gap = 1 if adjacent_ok else 2
    return all(lo <= hi for lo, hi in intervals) and all(
        b[0] >= a[1] + gap for a, b in zip(intervals, intervals[1:], strict=False))


def expand(intervals) -> list[int]:
    return [n for lo, hi in intervals for n in range(lo, hi + 1)]


@settings(derandomize=True, max_examples=200)
@given(OPS)
def test_seqset_matches_a_plain_set(ops):
    s, model = SeqSet(), set()
    for op in ops:
        if op[0] == "add":
            s.add(op[1])
            model.add(op[1])
        elif op[0] == "range":
            s.add_range(op[1], op[1] + op[2])
            model.update(range(op[1], op[1] + op[2] + 1))
        else:
            s.remove_below(op[1])
            model = {n for n in model if n > op[1]}
        assert canonical(s.intervals(), adjacent_ok=False)
        assert expand(s.intervals()) == sorted(model)
    assert len(s) == len(model) and s.maximum() == max(model, default=0)
    assert {n for n in range(0, 72) if n in s} == model


RUNS = st.lists(st.tuples(st.integers(0, 4), st.integers(1, 5)), max_size=8)  # (gap, length)


def build(runs) -> list[tuple[int, int]]:
    """Sorted disjoint intervals; a gap of 0 makes two of them adjacent."""
    out: list[tuple[int, int]] = []
    for gap, length in runs:
        lo = (out[-1][1] if out else 0) + 1 + gap
        out.append((lo, lo + length - 1))
    return out


@settings(derandomize=True, max_examples=200)
@given(RUNS, RUNS, st.integers(0, 30))
def test_seqset_missing_from_matches_a_plain_set(mine, theirs, floor):
    s, other = SeqSet(build(mine)), build(theirs)
    missing = s.missing_from(other, floor)
    assert canonical(missing, adjacent_ok=True)
    assert expand(missing) == sorted({n for n in expand(other) if n > floor} - set(s))


def test_check_intervals_accepts_pairs():
    assert check_intervals([[1, 2], (3, 3)]) == [(1, 2), (3, 3)] and check_intervals([]) == []
    assert check_intervals([[1, 1]] * 3, limit=3) == [(1, 1)] * 3


@pytest.mark.parametrize("bad, limit", [(b, 10_000) for b in (
    "1-2", ((1, 2),), {(1, 2)}, None, [[2, 1]], [[True, 2]], [[1, True]], [[0, 1]], [[-3, -1]],
    [[1]], [[1, 2, 3]], [1], [[1.0, 2]], [["1", 2]], [[1, None]])] + [
    ([[1, 1]] * 4, 3), ([[n, n] for n in range(1, 10_002)], 10_000)])
def test_check_intervals_rejects(bad, limit):
    with pytest.raises(ValueError):
        check_intervals(bad, limit)


# -- Store: kept batches ----------------------------------------------------------------------
def test_commit_batches_returns_only_new(kept):
    assert commit(kept, batch("pi", 1), batch("pi", 2), batch("zero", 1)) == [("pi", 1), ("pi", 2), ("zero", 1)]
    assert commit(kept, batch("pi", 2), batch("pi", 3), batch("pi", 3)) == [("pi", 3)]
    assert kept.count("pi") == 6 and kept.count("zero") == 2
    assert {n["name"]: n["last_seq"] for n in kept.nodes()} == {"pi": 3, "zero": 1}


def test_out_of_order_batches_are_all_kept_and_resends_are_duplicates(kept):
    for seq in (5, 3, 4):
        assert commit(kept, batch("pi", seq)) == [("pi", seq)]
    assert kept.holdings() == {"pi": [(3, 5)]}
    for seq in (3, 4, 5):
        assert commit(kept, batch("pi", seq)) == []
    assert kept.count("pi") == 6 and kept.nodes()[0]["last_seq"] == 5


def test_holdings_missing_and_fetch_round_trip(kept):
    sent = {seq: batch("pi", seq, T0 + seq, alerts=[event("raised", T0 + seq, alert=f"a{seq}")])
            for seq in (1, 2, 3, 7, 8, 10)}
    commit(kept, *sent.values())
    assert kept.holdings() == {"pi": [(1, 3), (7, 8), (10, 10)]}
    assert kept.missing("pi", [(1, 12)]) == [(4, 6), (9, 9), (11, 12)]
    assert kept.missing("pi", [(2, 3), (7, 7)]) == []
    assert kept.missing("other", [(1, 4)]) == [(1, 4)]
    fetched = kept.fetch_batches("pi", [(2, 8), (10, 20)], limit=10)
    assert [f[0] for f in fetched] == [2, 3, 7, 8, 10]
    for seq, rows_json, alerts_json in fetched:
        assert [Row._make(r) for r in json.loads(rows_json)] == sent[seq].rows
        assert json.loads(alerts_json) == sent[seq].alerts
    assert [f[0] for f in kept.fetch_batches("pi", [(1, 3), (7, 10)], limit=4)] == [1, 2, 3, 7]
    assert [f[0] for f in kept.fetch_batches("pi", [(2, 2), (8, 10)], limit=1)] == [2]
    assert kept.fetch_batches("pi", [(4, 6)], limit=10) == []
    assert kept.oldest_received("pi", [(4, 6)]) is None


def test_commit_own_takes_the_next_seq_above_what_is_held(kept):
    commit(kept, batch("hub1", 1), batch("hub1", 9))  # 9 came from a peer before 2..8
    assert kept.commit_own("hub1", [row(T0)], [event("raised", T0)], T0) == 10
    assert kept.commit_own("hub1", [], [], T0) == 11
    assert kept.commit_own("hub2", [row(T0)], [], T0) == 1
    assert kept.holdings() == {"hub1": [(1, 1), (9, 11)], "hub2": [(1, 1)]}
    [(seq, _, alerts_json)] = kept.fetch_batches("hub1", [(10, 10)], limit=5)
    assert json.loads(alerts_json)[0]["alert"] == "hot" and [a["since"] for a in kept.alerts()] == [T0]


def test_holdings_survive_reopening(tmp_path):
    store = Store(tmp_path / "h.sqlite3", keep_batches=True)
    commit(store, batch("pi", 1), batch("pi", 2), batch("pi", 5), batch("zero", 4))
    store.commit_own("hub1", [row(T0)], [], T0)
    before = store.holdings()
    store.close()
    store = Store(tmp_path / "h.sqlite3", keep_batches=True)
    try:
        assert store.holdings() == before == {"pi": [(1, 2), (5, 5)], "zero": [(4, 4)], "hub1": [(1, 1)]}
        assert commit(store, batch("pi", 2), batch("pi", 3)) == [("pi", 3)]
        assert store.missing("pi", [(1, 6)]) == [(4, 4), (6, 6)]
        assert store.commit_own("hub1", [], [], T0) == 2
    finally:
        store.close()


def test_retain_deletes_old_batches_and_raises_the_floor(tmp_path):
    store = Store(tmp_path / "h.sqlite3", keep_batches=True)
    commit(store, batch("pi", 1), batch("pi", 2), batch("zero", 1), received=T0)
    commit(store, batch("pi", 3), received=T0 + 2 * DAY)
    store.retain(raw_days=1, rollup_days=30, now=T0 + DAY + 10)
    assert store.floors() == {"pi": 2, "zero": 1}
    assert store.holdings() == {"pi": [(3, 3)]}
    assert [f[0] for f in store.fetch_batches("pi", [(1, 5)], limit=10)] == [3]
    assert store.missing("pi", [(1, 4)]) == [(4, 4)]  # deleted ones are not asked for again
    assert commit(store, batch("pi", 1), batch("pi", 2), batch("zero", 1)) == []
    assert commit(store, batch("pi", 4), received=T0 + 2 * DAY) == [("pi", 4)]
    store.close()
    store = Store(tmp_path / "h.sqlite3", keep_batches=True)
    try:
        assert store.floors() == {"pi": 2, "zero": 1} and store.holdings() == {"pi": [(3, 4)]}
        assert commit(store, batch("pi", 2)) == []
        store.retain(raw_days=1, rollup_days=30, now=T0 + 1.5 * DAY)  # nothing more is old enough
        assert store.floors() == {"pi": 2, "zero": 1}
    finally:
        store.close()


def test_without_keep_batches_the_last_seq_decides(tmp_path):
    store = Store(tmp_path / "h.sqlite3")
    try:
        assert commit(store, batch("pi", 1), batch("pi", 2)) == [("pi", 1), ("pi", 2)]
        assert commit(store, batch("pi", 5)) == [("pi", 5)]
        assert commit(store, batch("pi", 3), batch("pi", 5)) == []  # 3 <= 5: taken for a duplicate
        assert store.holdings() == {} and store.fetch_batches("pi", [(1, 10)], limit=10) == []
        assert store.commit_own("pi", [row(T0)], [], T0) == 6
        store.retain(raw_days=1, rollup_days=1, now=T0 + 10 * DAY)
        assert store.floors() == {} and store.count("pi") == 1  # the newest row is never deleted
    finally:
        store.close()


# -- alert episodes, order-free -----------------------------------------------------------------
EPISODE_EVENTS = [event("raised", 1000.0), event("acknowledged", 1000.0, 1010.0),
                  event("cleared", 1000.0, 1020.0), event("raised", 2000.0)]


@pytest.mark.parametrize("via", ["batches", "record"])
def test_alert_episodes_do_not_depend_on_arrival_order(tmp_path, via):
    outcomes = set()
    for i, order in enumerate(permutations(EPISODE_EVENTS)):
        store = Store(tmp_path / f"{via}{i}.sqlite3", keep_batches=True)
        for seq, e in enumerate(order, 1):
            if via == "batches":
                commit(store, Batch("pi", seq, [], [e]))
            else:
                store.record_alerts([e], T0)
        rows = store.alerts(active_only=False)
        outcomes.add(tuple(sorted((a["since"], a["active"], a["acknowledged"]) for a in rows)))
        assert [a["since"] for a in store.alerts()] == [2000.0]
        assert len(store.alert_history(0)) == 4
        store.close()
    assert outcomes == {((1000.0, False, True), (2000.0, True, False))}


def test_a_newer_raise_ends_the_older_episode(kept):
    kept.record_alerts([event("raised", 1000.0), event("raised", 1000.0, alert="cold")], T0)
    assert sorted(a["alert"] for a in kept.alerts()) == ["cold", "hot"]
    kept.record_alerts([event("raised", 2000.0)], T0)
    state = {(a["alert"], a["since"]): a["active"] for a in kept.alerts(active_only=False)}
    assert state == {("hot", 1000.0): False, ("hot", 2000.0): True, ("cold", 1000.0): True}
    kept.record_alerts([event("raised", 500.0)], T0)  # a late copy of an even older episode
    state = {(a["alert"], a["since"]): a["active"] for a in kept.alerts(active_only=False)}
    assert state[("hot", 500.0)] is False and state[("hot", 2000.0)] is True


# -- acknowledgements, job runs, summaries ------------------------------------------------------
def test_acknowledge_episode_marks_only_that_episode_once(kept):
    kept.record_alerts([event("raised", 1000.0), event("raised", 2000.0)], T0)
    k1, k2 = ["pi", "thresholds", "hot", 1000.0], ["pi", "thresholds", "hot", 2000.0]
    unknown = ["pi", "thresholds", "hot", 3000.0]
    assert kept.unacknowledged([k1, k2, unknown]) == [k1, k2]
    kept.acknowledge_episode(k1, "alice", 5.0)
    kept.acknowledge_episode(k1, "bob", 6.0)
    kept.acknowledge_episode(unknown, "bob", 6.0)  # not held: nothing happens
    kept.record_alerts([event("acknowledged", 1000.0, 7.0)], T0)
    by_since = {a["since"]: a for a in kept.alerts(active_only=False)}
    assert len(by_since) == 2
    assert (by_since[1000.0]["acknowledged"], by_since[1000.0]["acked_by"], by_since[1000.0]["acked_ts"]) == (
        True, "alice", 5.0)
    assert (by_since[2000.0]["acknowledged"], by_since[2000.0]["acked_by"]) == (False, None)
    assert kept.unacknowledged([k1, k2, unknown]) == [k2]


def test_job_runs_keep_the_first_record(kept):
    assert kept.job_run("daily_summary", "2023-11-14") is None
    kept.record_job_run("daily_summary", "2023-11-14", "hub1", 10.0, "ok")
    kept.record_job_run("daily_summary", "2023-11-14", "hub2", 20.0, "other")
    kept.record_job_run("daily_summary", "2023-11-15", "hub2", 30.0, "ok")
    assert kept.job_run("daily_summary", "2023-11-14") == {"hub": "hub1", "ran": 10.0, "result": "ok"}
    assert kept.job_run("daily_summary", "2023-11-15") == {"hub": "hub2", "ran": 30.0, "result": "ok"}
    assert kept.job_run("retention", "2023-11-14") is None


def test_summary_rows_put_on_another_hub_equal_daily_summary(tmp_path, kept):
    day, start = "2023-11-14", T0
    commit(kept, Batch("pi", 1, [row(start + 10, 20.0), row(start + 20, 24.0), row(start + 30, 30.0, "bme680")],
                       [event("raised", start + 15)]))
    commit(kept, Batch("pi", 2, [row(start + DAY + 5, 99.0)], []))  # the next day: not counted
    rows = kept.summary_rows(start, start + DAY, day)
    assert kept.daily_summary(start, start + DAY, day) == 2
    other = Store(tmp_path / "peer.sqlite3", keep_batches=True)
    try:
        assert other.put_summary(day, rows) == 2
        assert other.summaries(day) == kept.summaries(day)
        by_sensor = {s["sensor"]: s for s in other.summaries(day)}
        assert (by_sensor["dht22"]["min"], by_sensor["dht22"]["mean"], by_sensor["dht22"]["max"]) == (20, 22, 24)
        assert (by_sensor["dht22"]["n"], by_sensor["dht22"]["alerts"], by_sensor["bme680"]["alerts"]) == (2, 1, 0)
        other.put_summary(day, rows[:1])  # a day stored again replaces it
        assert len(other.summaries(day)) == 1
    finally:
        other.close()


# -- the spoke's pusher, majority deletion ----------------------------------------------------
class FakeHub:
    """An aggregator that commits everything, or is down (CommunicationError on every call)."""

    def __init__(self, ack=lambda seqs: seqs) -> None:
        self.down, self.pushed, self.hellos, self._ack = False, [], 0, ack

    def _reach(self) -> None:
        if self.down:
            raise CommunicationError("connection refused")

    def hello(self, info, sent_at):
        self._reach()
        self.hellos += 1
        return {"last_seq": 0}

    def push(self, batches, sent_at):
        self._reach()
        seqs = [b["seq"] for b in batches]
        self.pushed.extend(seqs)
        return {"acked": self._ack(seqs), "duplicates": 0, "hello": []}


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", "sp1")
    yield box
    box.close()


def make_pusher(outbox, monkeypatch, n_hubs: int, n_batches: int = 3, limit: int = 50, **fake):
    for i in range(n_batches):
        outbox.append([Reading.measured("sp1", "dht22", "temperature", 21.0 + i, T0 + i)])
    fakes = {f"127.0.0.1:{port}": FakeHub(**fake) for port in range(1, n_hubs + 1)}
    monkeypatch.setattr(Pusher, "_aggregator", lambda self, link: (fakes[link.address], False))
    pusher = Pusher("sp1", outbox, [("127.0.0.1", p) for p in range(1, n_hubs + 1)], None, limit,
                    lambda: {"node": "sp1"})
    return pusher, list(fakes.values())


def pending(outbox: Outbox) -> list[int]:
    return [b["seq"] for b in outbox.peek(100)]


def test_pusher_deletes_once_a_majority_of_three_hubs_committed(outbox, monkeypatch):
    pusher, hubs = make_pusher(outbox, monkeypatch, 3)
    assert pusher.push_to(0) == 0 and pending(outbox) == [1, 2, 3]
    assert [lk["acked_seq"] for lk in pusher.links_state()] == [3, 0, 0]
    assert pusher.push_to(1) == 3 and pending(outbox) == []
    assert pusher.push_to(2) == 0 and hubs[2].pushed == [] and hubs[2].hellos == 1
    outbox.append([], alerts=None)  # seq 4, a batch without readings
    assert pusher.push_once() == 1 and pending(outbox) == []
    assert hubs[0].pushed == [1, 2, 3, 4] and hubs[1].pushed == [1, 2, 3, 4]


def test_pusher_drains_a_backlog_in_several_calls(outbox, monkeypatch):
    pusher, hubs = make_pusher(outbox, monkeypatch, 3, n_batches=5, limit=2)
    assert pusher.push_to(0) == 0 and hubs[0].pushed == [1, 2, 3, 4, 5]
    assert pusher.push_to(1) == 5 and pending(outbox) == []


def test_pusher_a_down_hub_does_not_block_the_other_two(outbox, monkeypatch):
    pusher, hubs = make_pusher(outbox, monkeypatch, 3)
    hubs[0].down = True
    assert pusher.push_once() == 3 and pending(outbox) == []
    assert [lk["ok"] for lk in pusher.links_state()] == [False, True, True]
    assert hubs[0].pushed == [] and hubs[1].pushed == hubs[2].pushed == [1, 2, 3]


def test_pusher_two_hubs_down_deletes_nothing(outbox, monkeypatch):
    pusher, hubs = make_pusher(outbox, monkeypatch, 3)
    hubs[1].down = hubs[2].down = True
    assert pusher.push_once() == 0 and pusher.push_once() == 0
    assert pending(outbox) == [1, 2, 3] and hubs[0].pushed == [1, 2, 3]
    assert [lk["ok"] for lk in pusher.links_state()] == [True, False, False]
    hubs[2].down = False
    assert pusher.push_once() == 3 and pending(outbox) == []


def test_pusher_with_one_hub_deletes_each_acknowledged_batch(outbox, monkeypatch):
    pusher, hubs = make_pusher(outbox, monkeypatch, 1, n_batches=4,
                                       ack=lambda seqs: [s for s in seqs if s != 2])
    assert pusher.majority == 1
    assert pusher.push_once() == 3 and pending(outbox) == [2]  # deleted one by one, not up to a mark
    hubs[0].down = True
    assert pusher.push_once() == 0 and pending(outbox) == [2]
