"""A push decoded by actors.hub.wire (typed, from the call's msgpack bytes) is checked to exactly the
outcome of the dicts Pyro5 makes of the same bytes: the same rows, or the same refusal. And the
daemon's serializer decodes only the registered call that way, leaving every other call (and
anything the typed decoder refuses) to Pyro5."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from Pyro5 import serializers

from actors.hub import wire
from actors.hub.aggregator import AggregatorActor
from actors.hub.ingest import COLUMNS_FROM_BATCHES, TypedBatches, _typed_whole_push, check_push
from nameserver.pyro import TypedCall, decode_calls_typed
from tests.unit.test_hub_ingest_fast import (
    LEFT_TO_THE_BATCH_PATH,
    NASTY,
    NOW,
    READING_FIELDS,
    broken,
    outcome,
    push,
    typed,
    warm,
)


@pytest.fixture(autouse=True)
def forgetting(monkeypatch):
    """Each test starts with no series known and its own are forgotten after it: the cases need
    one unseen, as test_hub_ingest_fast's do, whichever of them runs first in a worker."""
    from actors.hub import ingest

    monkeypatch.setattr(ingest, "_KNOWN", {})


def checked(result: Any) -> Any:
    """check_push's outcome, comparable: each value with its type; or the refusal. The series a
    column path gathers are what its rows hold (a batch path gathers none: the store reads the
    rows, and which path takes a push depends on the series seen before, which checking a push
    changes)."""
    if isinstance(result, tuple) and result and result[0] == "refused":
        return result
    if result.series is not None:
        assert result.series == {r[:2] + r[3:4] for b in result.batches for r in b.rows}
    return typed(result.batches)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON with sorted keys: 21 and 21.0 differ, NaN equals NaN (== says it does not)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def wire_bytes(batches: Any) -> bytes | None:
    """push(batches, NOW)'s positional arguments as a Pyro5 client packs them (None: msgpack cannot)."""
    try:
        return msgpack.packb((batches, NOW), use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return None


def same_as_pyro5(batches: Any) -> bool:
    """Check the typed path's outcome against the stock one; True when the typed decoder took the call."""
    data = wire_bytes(batches)
    if data is None:
        return False
    expected = checked(outcome(lambda: check_push(msgpack.unpackb(data, raw=False)[0], NOW)))
    try:
        decoded, sent_at = wire.decode_push(memoryview(data))
    except wire.REFUSED:
        return False
    assert type(decoded) is TypedBatches and sent_at == NOW
    assert same_json(decoded.dicts(), msgpack.unpackb(data, raw=False)[0])  # what the batch path sees
    assert checked(outcome(lambda: check_push(decoded, NOW))) == expected
    return True


def test_a_drained_backlog_takes_the_typed_column_path_with_the_same_rows() -> None:
    warm()
    for full in (True, False):
        calls = push(50, 10, full)
        decoded, _ = wire.decode_push(memoryview(wire_bytes(calls)))
        assert _typed_whole_push(decoded, NOW) is not None  # so the comparison is not vacuous
        assert same_as_pyro5(calls)


def test_what_the_typed_path_leaves_to_pyro5s_dicts() -> None:
    warm()
    cases = {
        **LEFT_TO_THE_BATCH_PATH,
        "an explicit null node": lambda p: p[0]["readings"][0].update(node=None),
        "a reading of another node": lambda p: p[0]["readings"][0].update(node="x"),
        "a reading without its quality": lambda p: p[0]["readings"][0].pop("quality"),
        "a reading with only its node of the three": lambda p: [p[0]["readings"][0].pop(k) for k in ("quality", "reason")],
        "an unknown quality": lambda p: p[0]["readings"][0].update(quality="great"),
        "a stamp before clocks were set": lambda p: p[0]["readings"][0].update(ts=1.0),
        "a seq of zero": lambda p: p[0].update(seq=0),
        "a node name that is not one": lambda p: [b.update(node="not a name") for b in p],
        "no value": lambda p: p[0]["readings"][0].update(value=None, quality="unavailable", reason="gone"),
        "a value out of range": lambda p: p[0]["readings"][0].update(value=1e9),
        "a string value": lambda p: p[0]["readings"][0].update(value="21"),
        "a true seq": lambda p: p[0].update(seq=True),
        "an unknown field": lambda p: p[0]["readings"][0].update(colour="red"),
    }
    for what, change in cases.items():
        calls = push(COLUMNS_FROM_BATCHES, 4, True)
        change(calls)
        data = wire_bytes(calls)
        try:
            decoded, _ = wire.decode_push(memoryview(data))
        except wire.REFUSED:
            decoded = None
        assert decoded is None or _typed_whole_push(decoded, NOW) is None, what
        same_as_pyro5(calls)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(full=st.booleans(), batches=st.integers(COLUMNS_FROM_BATCHES, COLUMNS_FROM_BATCHES + 2), per_batch=st.integers(0, 4),
       changes=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from(READING_FIELDS + ["extra"]),
                                  st.sampled_from(["set", "drop"]), st.sampled_from(NASTY)), max_size=3),
       batch_changes=st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["node", "seq", "readings", "alerts", "x"]),
                                        st.sampled_from(NASTY)), max_size=2))
def test_typed_and_pyro5_decoding_agree_on_pushes_broken_one_field_at_a_time(
        full: bool, batches: int, per_batch: int, changes: list[Any], batch_changes: list[Any]) -> None:
    warm()
    same_as_pyro5(broken(push(batches, per_batch, full), changes, batch_changes))


def call_bytes(obj: str, method: str, vargs: Any, kwargs: Any = None) -> bytes:
    return msgpack.packb((obj, method, vargs, kwargs or {}), use_bin_type=True)


def test_the_daemons_serializer_decodes_only_the_registered_call_typed() -> None:
    decode_calls_typed("test.wire.aggregator", "push", TypedCall(wire.decode_push, wire.REFUSED))
    decode_calls_typed("test.wire.big", "push", TypedCall(wire.decode_push, wire.REFUSED, 10**6))
    ser = serializers.serializers["msgpack"]
    assert serializers.serializers_by_id[ser.serializer_id] is ser
    batches = push(COLUMNS_FROM_BATCHES, 2, True)
    obj, method, vargs, kwargs = ser.loadsCall(call_bytes("test.wire.aggregator", "push", (batches, NOW)))
    assert (obj, method, kwargs) == ("test.wire.aggregator", "push", {}) and type(vargs[0]) is TypedBatches
    assert same_json(vargs[0].dicts(), batches) and vargs[1] == NOW
    stock = [  # another object, another method, keyword arguments, a call the decoder refuses, one batch alone
        call_bytes("test.wire.other", "push", (batches, NOW)),
        call_bytes("test.wire.aggregator", "hello", ({"node": "rover"}, NOW)),
        call_bytes("test.wire.aggregator", "push", (batches,), {"sent_at": NOW}),
        call_bytes("test.wire.aggregator", "push", ([{**batches[0], "seq": "1"}], NOW)),
        call_bytes("test.wire.aggregator", "push", (batches[0], NOW)),
        call_bytes("test.wire.big", "push", (batches, NOW)),  # under its from_bytes
    ]
    for data in stock:
        assert ser.loadsCall(data) == msgpack.unpackb(data, raw=False, use_list=True) or \
            list(ser.loadsCall(data)) == list(msgpack.unpackb(data, raw=False))
        assert not any(isinstance(v, TypedBatches) for v in ser.loadsCall(data)[2])
    with pytest.raises(Exception):  # noqa: B017 (Pyro5's own error for bytes that are no call)
        ser.loadsCall(b"\xc1")
    # alerts nested 1000 deep: too deep for msgspec (RecursionError), not for Pyro5's decoder,
    # whose dicts then reach the hub's checks as they did without the typed path
    deep = b"\x91" * 1000 + b"\x90"
    batch = b"\x84" + b"".join(msgpack.packb(x) for x in ("node", "rover", "seq", 1, "readings", [], "alerts")) + deep
    data = b"\x94" + msgpack.packb("test.wire.aggregator") + msgpack.packb("push") + b"\x92\x91" + batch + \
        msgpack.packb(NOW) + b"\x80"
    obj, method, vargs, kwargs = ser.loadsCall(data)
    assert (obj, method, type(vargs[0]), vargs[0][0]["seq"], vargs[1]) == ("test.wire.aggregator", "push", list, 1, NOW)


def test_a_hub_without_msgspec_registers_no_typed_call(monkeypatch) -> None:
    import actors.hub

    monkeypatch.setitem(sys.modules, "actors.hub.wire", None)  # as on a board where it cannot be imported
    monkeypatch.delattr(actors.hub, "wire")
    assert AggregatorActor.typed_calls(object.__new__(AggregatorActor)) == {}
