"""The hub checks a common push in whole columns (actors.hub.ingest._whole_push) and anything
else batch by batch (validate_batch). The column path must accept exactly what the batch path
accepts, with the same rows, and leave everything else to it: these tests push the same calls,
clean and broken one field at a time, through both."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.errors import BadRequest
from actors.hub.ingest import _whole_push, validate_batch, validate_batches

NOW = 1_700_000_000.0
SERIES = [("dht22", "temperature", "°C", 21.5), ("dht22", "humidity", "%", 40.0),
          ("bme680", "pressure", "hPa", 1013.2), ("cpu", "cpu_load", "%", 3), ("memory", "memory_used", "MB", 300.0)]
NASTY = [None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, 10**400, 1e308, -1e308, math.nan, math.inf, -math.inf,
         "", "x", "\ud800", "ok", "stale", "unavailable", "degraded", "rover", "ROVER", [], {}, [1], {"a": 1},
         NOW, NOW - 1, NOW + 86_401, 1_500_000_000.0, 1_577_836_800, 1_577_836_799.999, 150.0, -300.0, 101.0, 1e9,
         "°C", "%", "hPa", "temperature", "pressure", "dht22", "nope"]
READING_FIELDS = ["node", "sensor", "quantity", "value", "unit", "ts", "quality", "reason"]


def reading(series: tuple[str, str, str, float], i: int, full: bool, node: str = "rover") -> dict[str, Any]:
    sensor, quantity, unit, value = series
    r: dict[str, Any] = {"sensor": sensor, "quantity": quantity, "value": value, "unit": unit, "ts": NOW - 5 + i * 1e-3}
    if full:
        r.update(node=node, quality="ok", reason=None)
    return r


def push(batches: int, per_batch: int, full: bool, node: str = "rover") -> list[dict[str, Any]]:
    return [{"node": node, "seq": 100 + b,
             "readings": [reading(SERIES[(b + j) % len(SERIES)], j, full, node) for j in range(per_batch)],
             **({"alerts": []} if full else {})}
            for b in range(batches)]


def outcome(call: Any) -> Any:
    try:
        return call()
    except BadRequest as exc:
        return ("refused", str(exc))


def typed(batches: Any) -> Any:
    """The checked batches with every value's type beside it (21 and 21.0 are equal, not the same)."""
    if not isinstance(batches, list):
        return batches
    return [(b.node, b.seq, [tuple((v, type(v)) for v in row) for row in b.rows], b.alerts) for b in batches]


def same_either_way(batches: Any) -> Any:
    """What the column path gives, after checking it against the batch path; returns the batch path's outcome."""
    by_batch = outcome(lambda: [validate_batch(b, NOW) for b in batches])
    checked = _whole_push(batches, NOW)
    if checked is not None:
        whole = checked.batches
        assert checked.series == {r[:2] + r[3:4] for b in whole for r in b.rows}
        assert not isinstance(by_batch, tuple), f"the column path took what the batch path refuses: {by_batch}"
        assert typed(whole) == typed(by_batch)
    assert typed(outcome(lambda: validate_batches(batches, NOW))) == typed(by_batch)
    return by_batch


def warm() -> None:
    """Every series seen once by the batch path, as a node's first push does."""
    for full in (True, False):
        for b in push(len(SERIES), 1, full):
            validate_batch(b, NOW)


def test_a_common_push_takes_the_column_path_with_the_batch_paths_rows() -> None:
    warm()
    for full in (True, False):
        calls = push(50, 10, full)
        assert _whole_push(calls, NOW) is not None  # so the comparisons below are not all vacuous
        rows = same_either_way(calls)
        assert sum(len(b.rows) for b in rows) == 500
    assert _whole_push([{"node": "rover", "seq": 1, "readings": []}], NOW) is not None


# pushes a column path leaves to the batch path (test_hub_wire adds the typed decoder's own)
LEFT_TO_THE_BATCH_PATH = {
    "an unseen series": lambda p: p[0]["readings"][0].update(sensor="dht22b"),
    "a reason": lambda p: p[0]["readings"][0].update(reason="warming up"),
    "alerts": lambda p: p[0].update(alerts=[{"plugin": "x"}]),
    "two nodes": lambda p: p[1].update(node="other"),
    "fields of two widths": lambda p: p[0]["readings"][0].pop("reason"),
}


def test_what_the_column_path_leaves_to_the_batch_path() -> None:
    warm()
    cases = {**LEFT_TO_THE_BATCH_PATH, "a batch that is not an object": lambda p: p.append("batch")}
    for what, change in cases.items():
        calls = push(3, 4, True)
        change(calls)
        assert _whole_push(calls, NOW) is None, what
        same_either_way(calls)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(full=st.booleans(), batches=st.integers(1, 4), per_batch=st.integers(0, 4),
       changes=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(READING_FIELDS + ["extra"]),
                                  st.sampled_from(["set", "drop"]), st.sampled_from(NASTY)), max_size=3),
       batch_changes=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["node", "seq", "readings", "alerts", "x"]),
                                        st.sampled_from(NASTY)), max_size=2))
def test_both_paths_agree_on_pushes_broken_one_field_at_a_time(full: bool, batches: int, per_batch: int,
                                                               changes: list[Any], batch_changes: list[Any]) -> None:
    warm()
    same_either_way(broken(push(batches, per_batch, full), changes, batch_changes))


def broken(calls: list[dict[str, Any]], changes: list[Any], batch_changes: list[Any]) -> list[dict[str, Any]]:
    """The push with each change made: (batch, reading, field, "set" or "drop", value) to a reading,
    (batch, field, value) to a batch; indexes wrap around."""
    for b, r, field, how, value in changes:
        target = calls[b % len(calls)]["readings"]
        if not target:
            continue
        one = target[r % len(target)]
        if how == "drop":
            one.pop(field, None)
        else:
            one[field] = copy.deepcopy(value)
    for b, field, value in batch_changes:
        calls[b % len(calls)][field] = copy.deepcopy(value)
    return calls
