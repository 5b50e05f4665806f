"""The hub's ingest contract: what a pushed batch or a hello may hold, checked before anything is stored.

Every number that reaches SQLite is range-checked here: an INTEGER column holds a signed
64-bit value and the sqlite3 module raises OverflowError (not a BadRequest) for anything
larger, and every string must encode as UTF-8 (a lone surrogate, which JSON's \\ud800
escapes can carry, makes the insert fail)."""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable
from functools import partial
from itertools import chain, repeat
from operator import add, attrgetter, itemgetter, le, methodcaller
from typing import Any, NamedTuple

from actors.errors import BadRequest
from actors.hub.alerts import MAX_ALERTS_PER_BATCH, validate_alert
from actors.hub.store import Batch, Row
from actors.node.config import PROFILES, ROLES
from hal.errors import ReadingError
from hal.names import NODE_NAME_RULE, is_node_name
from hal.readings import NAME_RE, QUALITIES, QUANTITIES, Reading, check_fields
from hal.timesync import CLOCK_SET_AFTER, date_text

MAX_BATCHES_PER_CALL = 500
COLUMNS_FROM_BATCHES = 5  # pushes of this many batches or more are checked in columns (see validate_batches)
MAX_READINGS_PER_BATCH = 1000
MAX_FUTURE_S = 86400.0  # a reading stamped further ahead than this is rejected
SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1  # SQLite's INTEGER: signed 64-bit

# A hello's info is kept in memory and in the nodes table and rewritten whenever it changes:
# a node's own hello is a few hundred bytes (role, profile, push interval, one staleness
# limit per sensor), so these leave room for hundreds of sensors and refuse a megabyte.
MAX_INFO_BYTES = 16 * 1024  # the info as UTF-8 JSON
MAX_INFO_ITEMS = 512  # object keys and list items, counted through every level
MAX_INFO_STRING = 256  # characters in any key or string
MAX_INFO_DEPTH = 8  # nested objects and lists
MAX_STALE_AFTER_S = 1e7  # a sensor's staleness limit (the config allows 10 days plus a push interval)

READING_KEYS = frozenset({"node", "sensor", "quantity", "value", "unit", "ts", "quality", "reason"})
ALERT_NUMBERS = ("value", "ts", "since")
ALERT_TEXTS = ("plugin", "version", "message", "sensor", "quantity")


class _Brief(reprlib.Repr):
    """repr() cut short for error messages, safe for integers too long to print."""

    def repr_int(self, x: int, level: int) -> str:
        # str() of an int over 4300 digits raises ValueError: name its size instead
        if x.bit_length() > 256:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_brief = _Brief()
_brief.maxstring = _brief.maxother = 60
_brief.maxlong = 40


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, on one line, at most about 60 characters."""
    return _brief.repr(value)


def clipped(message: str, limit: int = 300) -> str:
    """Text for a one-line message (a rule's message quoting a whole value, a list of names), cut to `limit`."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    return message if len(message) <= limit else f"{message[:limit]}... (cut at {limit} characters)"


def is_sqlite_number(value: Any) -> bool:
    """True for an int or float SQLite stores as given: a 64-bit integer, or a finite float."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return SQLITE_INT_MIN <= value <= SQLITE_INT_MAX
    return isinstance(value, float) and math.isfinite(value)


def is_utf8(text: str) -> bool:
    """True when the string encodes as UTF-8 (it has no lone surrogate), so SQLite can store it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_big_for_float(value: Any) -> bool:
    try:
        float(value)
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False
    return False


class TypedBatches(list):  # type: ignore[type-arg]
    """A push's batches as actors.hub.wire decoded them: structures, each field's type checked.

    `dicts()` gives the dicts Pyro5's own decoder would have made of the same bytes; `unset` is
    the value of a field the sender left out."""

    def __init__(self, batches: list[Any], as_dicts: Callable[[list[Any]], list[Any]], unset: Any) -> None:
        super().__init__(batches)
        self._as_dicts, self.unset = as_dicts, unset

    def dicts(self) -> list[Any]:
        return self._as_dicts(self)


class Checked(NamedTuple):
    """A push's checked batches, and the (sensor, quantity, unit) of their readings when the
    column path gathered them (None otherwise): the store then makes sure of each series once,
    rather than once per reading."""

    batches: list[Batch]
    series: set[tuple[str, str, str]] | None


def check_push(batches: list[Any], now: float,
               declared: Callable[[str], dict[str, Any]] | None = None) -> Checked:
    """Check a push's batches (validate_batch each); raise BadRequest saying what is wrong.

    A backlog being drained (COLUMNS_FROM_BATCHES or more batches of one node, up to
    MAX_BATCHES_PER_CALL), whose every reading is of a series already seen with a plain value,
    is checked in whole columns at once (_whole_push); anything else, or anything that fails
    there, takes validate_batch's path, which gives the precise message. A push of a few
    batches (a node keeping up pushes one) costs less batch by batch than the column path's
    fixed steps."""
    if isinstance(batches, TypedBatches):
        if len(batches) >= COLUMNS_FROM_BATCHES:
            checked = _typed_whole_push(batches, now)
            if checked is not None:
                return checked
        batches = batches.dicts()
    if len(batches) >= COLUMNS_FROM_BATCHES:
        checked = _whole_push(batches, now)
        if checked is not None:
            return checked
    return Checked([validate_batch(b, now, declared) for b in batches], None)


def validate_batches(batches: list[Any], now: float,
                     declared: Callable[[str], dict[str, Any]] | None = None) -> list[Batch]:
    """check_push's batches."""
    return check_push(batches, now, declared).batches


def validate_batch(batch: Any, now: float, declared: Callable[[str], dict[str, Any]] | None = None) -> Batch:
    """Check one wire batch and turn its readings into rows; raise BadRequest saying what is wrong.

    The same rules as hal.readings.Reading (one function, check_fields), without building
    a Reading object per value: this is the hub's hot path. `declared(node)` gives the quantities
    the node declared beyond the built-ins (none without it)."""
    if not isinstance(batch, dict):
        raise BadRequest(f"a batch must be an object, got {type(batch).__name__}")
    if not _BATCH_KEYS.issuperset(batch):
        unknown = set(batch) - _BATCH_KEYS
        raise BadRequest(f"unknown batch field(s): {clipped(', '.join(sorted(map(str, unknown))), 200)}; "
                         "allowed: node, seq, readings, alerts")
    node, seq, readings = batch.get("node"), batch.get("seq"), batch.get("readings")
    if not (type(node) is str and node in _NAMED) and not _named(node):
        raise BadRequest(f"batch 'node' must match {NODE_NAME_RULE}, got {shown(node)}")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= SQLITE_INT_MAX:
        raise BadRequest(f"batch 'seq' must be a positive integer up to {SQLITE_INT_MAX}, got {shown(seq)}")
    if not isinstance(readings, list):
        raise BadRequest(f"batch 'readings' must be a list, got {type(readings).__name__}")
    if len(readings) > MAX_READINGS_PER_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_READINGS_PER_BATCH} readings, got {len(readings)}")
    limit = now + MAX_FUTURE_S
    own = declared(node) if declared is not None else {}
    rows = _rows(readings, node, seq, now, limit, own)
    events = batch.get("alerts")
    if not events:
        if events is not None and not isinstance(events, list):
            raise BadRequest(f"batch {node}#{seq} 'alerts' must be a list of at most {MAX_ALERTS_PER_BATCH} events")
        return Batch(node, seq, rows, [])
    if not isinstance(events, list) or len(events) > MAX_ALERTS_PER_BATCH:
        raise BadRequest(f"batch {node}#{seq} 'alerts' must be a list of at most {MAX_ALERTS_PER_BATCH} events")
    alerts = [validate_event(e, node, f"batch {node}#{seq} alert {i}") for i, e in enumerate(events)]
    return Batch(node, seq, rows, alerts)


_BATCH_KEYS = frozenset(("node", "seq", "readings", "alerts"))
# Node names that passed is_node_name once (a push carries up to 500 batches of the same node)
_NAMED: set[str] = set()


def _named(node: Any) -> bool:
    if not is_node_name(node):
        return False
    if len(_NAMED) < _KNOWN_MAX:
        _NAMED.add(node)
    return True


# Row(...) runs a Python-level __new__ (about 0.2 us a reading); tuple.__new__ builds the same
# Row at half that cost
_new_row = tuple.__new__
# (sensor, quantity, unit) of a built-in quantity that passed every check once -> its range. A
# reading of a known triple with a plain number, a set clock and no reason needs only its range
# and its stamp checked; anything else takes _row's full checks and its precise message.
_KNOWN: dict[tuple[Any, Any, Any], tuple[float, float]] = {}
_KNOWN_MAX = 100_000
_VALUED = frozenset(q for q in QUALITIES if q != "unavailable")
_NUMBER = (float, int)
_NUMBERS = frozenset(_NUMBER)


def _rows(readings: list[Any], node: str, seq: int, now: float, limit: float, declared: dict[str, Any]) -> list[Row]:
    """The batch's readings as Rows: the common case checked inline (about half the cost of
    _row's general path, the hub's largest cost per reading), the rest by _row."""
    out: list[Row] = []
    append, known, keys, valued, number = out.append, _KNOWN, READING_KEYS, _VALUED, _NUMBER
    for i, raw in enumerate(readings):
        if type(raw) is dict and keys.issuperset(raw):
            try:
                sensor, quantity, unit, value, ts = raw["sensor"], raw["quantity"], raw["unit"], raw["value"], raw["ts"]
                bounds = known.get((sensor, quantity, unit))
            except (KeyError, TypeError):  # a field missing, or a list where a name belongs: _row says so
                bounds = None
            if len(raw) == 5:  # node, quality and reason left to their defaults
                quality, plain = "ok", True
            else:
                get = raw.get
                quality = get("quality", "ok")
                # (a list for a quality is unhashable: _row refuses it with its message)
                plain = get("reason") is None and type(quality) is str and quality in valued \
                    and get("node", node) == node
            if bounds is not None and plain and type(value) in number and type(ts) in number \
                    and bounds[0] <= value <= bounds[1] and CLOCK_SET_AFTER <= ts <= limit:
                append(_new_row(Row, (sensor, quantity, value, unit, ts, quality, None)))
                continue
        row = _row(raw, node, f"batch {node}#{seq} reading {i}", now, limit, declared)
        q = QUANTITIES.get(row.quantity)
        if q is not None and len(known) < _KNOWN_MAX:
            known[(row.sensor, row.quantity, row.unit)] = (q.low, q.high)
        append(row)
    return out


_BATCH_NODE, _BATCH_SEQ, _BATCH_READINGS = itemgetter("node"), itemgetter("seq"), itemgetter("readings")
_ALERTS_OF = methodcaller("get", "alerts")
_FULL_READING = itemgetter("sensor", "quantity", "value", "unit", "ts", "quality", "reason")
_REQUIRED = ("sensor", "quantity", "value", "unit", "ts")  # a reading's fields without a default
_SHORT_READING = itemgetter(*_REQUIRED)
_READING_NODE = itemgetter("node")
_DEFAULTS = ("ok", None)  # quality and reason of a reading that leaves them out
_as_batch = partial(tuple.__new__, Batch)
_DICT_ONLY, _INT_ONLY, _LIST_ONLY = {dict}, {int}, {list}
# actors.hub.wire's structures, read by attribute
_NODE_OF_STRUCT, _SEQ_OF_STRUCT, _READINGS_OF_STRUCT, _ALERTS_OF_STRUCT = (
    attrgetter("node"), attrgetter("seq"), attrgetter("readings"), attrgetter("alerts"))
_FULL_OF_STRUCT = attrgetter("sensor", "quantity", "value", "unit", "ts", "quality", "reason")
_SHORT_OF_STRUCT = attrgetter(*_REQUIRED)
_EXTRA_OF_STRUCT = attrgetter("node", "quality", "reason")


def _whole_push(batches: list[Any], now: float) -> Checked | None:
    """The checked batches of a common push and their series, or None when it is not one
    (validate_batch then checks each batch and names what is wrong).

    A common push: batches of one node, without alert events, whose readings all have the same
    fields (all eight, or the five without defaults), a series that passed _row's full checks
    before, a plain number within its quantity's range, quality ok/degraded/stale, no reason,
    and a stamp of a set clock. Each check runs over a whole column in C (map, zip, set, min,
    max) instead of a Python step per reading (bench/bench_ingest.py measures the difference).
    What it accepts is exactly what validate_batch accepts, with the same rows
    (tests/unit/test_hub_ingest_fast.py checks both paths against each other)."""
    try:
        if not batches or not _DICT_ONLY.issuperset(map(type, batches)) or \
                not _BATCH_KEYS.issuperset(set().union(*batches)):
            return None
        alerts = list(map(_ALERTS_OF, batches))
        if alerts.count(None) + alerts.count([]) != len(alerts):
            return None
        nodes = list(map(_BATCH_NODE, batches))
        node = nodes[0]
        if type(node) is not str:
            return None
        seqs = list(map(_BATCH_SEQ, batches))
        if not _INT_ONLY.issuperset(map(type, seqs)):
            return None
        lists = list(map(_BATCH_READINGS, batches))
        if not _LIST_ONLY.issuperset(map(type, lists)):
            return None
        readings = list(chain.from_iterable(lists))
        n = len(readings)
        rows: list[Row] = []
        if n:
            if not _DICT_ONLY.issuperset(map(type, readings)):
                return None
            widths = set(map(len, readings))
            if widths == {len(READING_KEYS)}:  # every field: getting all eight proves there is no other
                if list(map(_READING_NODE, readings)).count(node) != n:
                    return None
                rows = list(map(_new_row, repeat(Row, n), map(_FULL_READING, readings)))
            elif widths == {len(_REQUIRED)}:  # likewise: the required fields and nothing else
                rows = list(map(_new_row, repeat(Row, n), map(add, map(_SHORT_READING, readings), repeat(_DEFAULTS, n))))
            else:
                return None
        return _checked_columns(node, nodes, seqs, list(map(len, lists)), rows, now)
    except (KeyError, TypeError, ValueError, OverflowError):  # a field missing, unhashable, a huge int
        return None


def _typed_whole_push(batches: TypedBatches, now: float) -> Checked | None:
    """_whole_push for a push actors.hub.wire decoded: the same push is common, with the same rows.

    The decoder checked every field's type already (str names, int seqs, an int or a float
    stamp, a value that is one or None) and left no unknown field; a field a reading left out
    is `batches.unset`. A push that is not common returns None: check_push then checks the
    dicts Pyro5 would have made (tests/unit/test_hub_wire.py checks the paths against each other)."""
    try:
        if not batches or any(map(_ALERTS_OF_STRUCT, batches)):  # UNSET, None and [] are all false
            return None
        nodes = list(map(_NODE_OF_STRUCT, batches))
        lists = list(map(_READINGS_OF_STRUCT, batches))
        readings = list(chain.from_iterable(lists))
        n = len(readings)
        rows: list[Row] = []
        if n:
            node, unset = nodes[0], batches.unset
            extras = list(chain.from_iterable(map(_EXTRA_OF_STRUCT, readings)))
            missing = extras.count(unset)
            if missing == 0:  # every field
                if extras[::3].count(node) != n:
                    return None
                rows = list(map(_new_row, repeat(Row, n), map(_FULL_OF_STRUCT, readings)))
            elif missing == 3 * n:  # the required fields only
                rows = list(map(_new_row, repeat(Row, n), map(add, map(_SHORT_OF_STRUCT, readings), repeat(_DEFAULTS, n))))
            else:
                return None
        return _checked_columns(nodes[0], nodes, list(map(_SEQ_OF_STRUCT, batches)), list(map(len, lists)), rows, now)
    except (TypeError, ValueError, OverflowError):
        return None


def _checked_columns(node: str, nodes: list[Any], seqs: list[int], sizes: list[int], rows: list[Row],
                     now: float) -> Checked | None:
    """The checks _whole_push and _typed_whole_push share, once each has its push's rows."""
    if nodes.count(node) != len(nodes) or not (node in _NAMED or _named(node)):
        return None
    if min(seqs) < 1 or max(seqs) > SQLITE_INT_MAX or max(sizes) > MAX_READINGS_PER_BATCH:
        return None
    series: set[tuple[str, str, str]] = set()
    if rows:
        n = len(rows)
        sensors, quantities, values, units, stamps, qualities, reasons = zip(*rows, strict=True)
        if reasons.count(None) != n or not _VALUED.issuperset(qualities) or \
                not _NUMBERS.issuperset(map(type, values)) or not _NUMBERS.issuperset(map(type, stamps)):
            return None
        # the push's series, for the store (Checked); then each reading's range
        series = set(zip(sensors, quantities, units, strict=True))
        bounds = list(map(_KNOWN.get, zip(sensors, quantities, units, strict=True)))
        if None in bounds:
            return None
        lows, highs = zip(*bounds, strict=True)
        # min/max skip a NaN that is not first: the sum of a column with one is NaN
        if not (all(map(le, lows, values)) and all(map(le, values, highs))
                and min(stamps) >= CLOCK_SET_AFTER and max(stamps) <= now + MAX_FUTURE_S
                and math.isfinite(sum(stamps))):
            return None
    out, start = [], 0
    for seq, size in zip(seqs, sizes, strict=True):
        out.append(_as_batch((node, seq, rows[start:start + size], [])))
        start += size
    return Checked(out, series)


def _row(raw: Any, node: str, where: str, now: float, limit: float, declared: dict[str, Any]) -> Row:
    """One wire reading as a Row, or BadRequest saying what is wrong with it (`where` names it)."""
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: a reading must be an object")
    if not READING_KEYS.issuperset(raw):
        extra = ", ".join(sorted(map(str, set(raw) - READING_KEYS)))
        raise BadRequest(f"{where}: unknown reading field(s): {clipped(extra, 200)}; "
                         f"allowed: {', '.join(sorted(READING_KEYS))}")
    try:
        # subscripts, not a generator over the key names: 0.18 us less a reading, which pays
        # for building each row as a Row
        sensor, quantity, value, unit, ts = raw["sensor"], raw["quantity"], raw["value"], raw["unit"], raw["ts"]
    except KeyError as exc:
        raise BadRequest(f"{where}: missing field {exc.args[0]!r}") from None
    quality, reason = raw.get("quality", "ok"), raw.get("reason")
    try:
        check_fields(raw.get("node", node), sensor, quantity, value, unit, ts, quality, reason, declared)
    except ReadingError as exc:
        raise BadRequest(f"{where}: {clipped(str(exc))}") from None
    except OverflowError:  # math.isfinite() of an int too large for a float
        field = "value" if _too_big_for_float(value) else "ts"
        raise BadRequest(f"{where}: {field} must be a finite number, got {shown(raw[field])}") from None
    if raw.get("node", node) != node:
        raise BadRequest(f"{where} names node {shown(raw['node'])}; expected the batch's node {node!r}")
    # bounds ts both ways (so an int ts fits SQLite); the value is bounded by its quantity's range
    if ts < CLOCK_SET_AFTER:  # no clock that was ever set reads earlier
        raise BadRequest(f"{where}: timestamp {shown(ts)} is {unset_clock_text(ts)}")
    if ts > limit:
        raise BadRequest(f"{where}: timestamp {shown(ts)} is more than {MAX_FUTURE_S:.0f} s in the future "
                         f"(the hub's clock reads {now:.0f})")
    if reason is not None and not is_utf8(reason):
        raise BadRequest(f"{where}: reason {shown(reason)} is not valid Unicode (a lone surrogate); "
                         "expected text that encodes as UTF-8")
    return _new_row(Row, (sensor, quantity, value, unit, ts, quality, reason))


def unset_clock_text(ts: float) -> str:
    """Why a stamp before 2020 is refused: `1970-01-02, before 2020-01-01: the sender's clock ...`."""
    when = date_text(ts)
    when = when if when.startswith("before") else f"{when}, before 2020-01-01"
    return (f"{when}: the sender's clock is not set (a board without a real-time clock before NTP syncs); "
            "expected epoch seconds from a set clock")


def validate_event(event: Any, sender: str, where: str) -> dict[str, Any]:
    """An alert event checked by actors.hub.alerts and for what SQLite can store; BadRequest otherwise."""
    try:
        checked = validate_alert(event, sender, where)
    except BadRequest as exc:
        raise BadRequest(clipped(str(exc))) from None
    except OverflowError:  # math.isfinite() of an int too large for a float
        field = next(k for k in ALERT_NUMBERS if _too_big_for_float(event.get(k)))
        raise BadRequest(f"{where}: bad alert field {field!r}: expected a finite number, "
                         f"got {shown(event[field])}") from None
    for key in ALERT_NUMBERS:
        v = checked[key]
        if v is not None and not is_sqlite_number(v):
            raise BadRequest(f"{where}: bad alert field {key!r}: expected a finite number "
                             f"(an integer within ±{SQLITE_INT_MAX}), got {shown(v)}")
    for key in ALERT_TEXTS:
        v = checked[key]
        if isinstance(v, str) and not is_utf8(v):
            raise BadRequest(f"{where}: bad alert field {key!r}: {shown(v)} is not valid Unicode "
                             "(a lone surrogate); expected text that encodes as UTF-8")
    return checked


class Hello(NamedTuple):
    """A checked hello: who the node is, how often it pushes, and the info to keep."""

    node: str
    role: str
    profile: str
    push_interval: float
    info: dict[str, Any]


def validate_hello(info: Any) -> Hello:
    """Check a node's hello (its info dict); raise BadRequest saying what is wrong and what is expected.

    Top-level values of other types than JSON's are dropped, as before; anything nested must be JSON."""
    name = info.get("node") if isinstance(info, dict) else None
    if not is_node_name(name):
        raise BadRequest(f"hello needs a valid 'node' ({NODE_NAME_RULE}), got {shown(name)}")
    role, profile = info.get("role", "spoke"), info.get("profile", "wasm")
    if role not in ROLES or profile not in PROFILES:
        raise BadRequest(f"bad role/profile {shown(role)}/{shown(profile)}; expected a role in {', '.join(ROLES)} "
                         f"and a profile in {', '.join(PROFILES)}")
    interval = info.get("push_interval", 5.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 3600:
        raise BadRequest(f"bad push_interval {shown(interval)}; expected seconds in (0, 3600]")
    clean = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, list, dict))}
    _check_info(clean)
    stale = clean.get("stale_after")
    if stale is not None:
        if not isinstance(stale, dict):
            raise BadRequest(f"hello 'stale_after' must map sensor names to seconds, got {type(stale).__name__}")
        for sensor, limit in stale.items():
            if not NAME_RE.match(sensor) or isinstance(limit, bool) or not isinstance(limit, (int, float)) \
                    or not 0 < limit <= MAX_STALE_AFTER_S:
                raise BadRequest(f"hello 'stale_after' {shown(sensor)}: {shown(limit)}; expected a sensor name "
                                 f"and seconds in (0, {MAX_STALE_AFTER_S:.0f}]")
    try:
        size = len(json.dumps(clean, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:  # _check_info lets none through; a last guard for the store
        raise BadRequest(f"hello info is not JSON: {exc}") from None
    if size > MAX_INFO_BYTES:
        raise BadRequest(f"hello info is {size} bytes as JSON; at most {MAX_INFO_BYTES} allowed")
    return Hello(name, role, profile, float(interval), clean)


def _check_info(info: dict[str, Any]) -> None:
    """Walk a hello's info without recursion, within the item, string, depth and number bounds."""
    items = 0
    todo: list[tuple[str, Any, int]] = [("info", info, 0)]
    while todo:
        where, value, depth = todo.pop()
        if isinstance(value, str):
            if len(value) > MAX_INFO_STRING or not is_utf8(value):
                raise BadRequest(f"hello {where}: strings must be UTF-8 text of at most {MAX_INFO_STRING} "
                                 f"characters, got {shown(value)} ({len(value)} characters)")
        elif value is None or isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            if not is_sqlite_number(value):
                raise BadRequest(f"hello {where}: numbers must be finite (integers within ±{SQLITE_INT_MAX}), "
                                 f"got {shown(value)}")
        elif isinstance(value, (dict, list, tuple)):
            if depth >= MAX_INFO_DEPTH:
                raise BadRequest(f"hello info nests deeper than {MAX_INFO_DEPTH} levels at {where}")
            items += len(value)
            if items > MAX_INFO_ITEMS:
                raise BadRequest(f"hello info holds more than {MAX_INFO_ITEMS} keys and list items; "
                                 "send only what describes the node")
            if isinstance(value, dict):
                for k, v in value.items():
                    if not isinstance(k, str) or len(k) > MAX_INFO_STRING or not is_utf8(k):
                        raise BadRequest(f"hello {where}: keys must be UTF-8 strings of at most {MAX_INFO_STRING} "
                                         f"characters, got {shown(k)}")
                    todo.append((f"{where}.{clipped(k, 40)}" if len(where) < 80 else where, v, depth + 1))
            else:
                todo.extend((f"{where}[{j}]" if len(where) < 80 else where, v, depth + 1)
                            for j, v in enumerate(value))
        else:
            raise BadRequest(f"hello {where}: {type(value).__name__} is not JSON; expected a string, number, "
                             "boolean, null, list or object")


def to_row(r: Reading) -> Row:
    """A Reading as the hub's row."""
    return Row(r.sensor, r.quantity, r.value, r.unit, r.ts, r.quality, r.reason)
