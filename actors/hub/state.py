"""The hub's domain object: latest value per node/sensor/quantity, the node registry, idempotent ingest."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from itertools import chain
from operator import attrgetter
from typing import Any

from actors.errors import BadRequest
from actors.hub.ingest import (
    MAX_BATCHES_PER_CALL,
    check_push,
    to_row,
    validate_event,
    validate_hello,
)
from actors.hub.quantities import FleetQuantities
from actors.hub.store import Batch, Row, Store
from actors.hub.views import CLOCK_SKEW_LIMIT, CachedView, NodeState, ViewCache
from hal.readings import Reading

# What the hub keeps of a spoke's outbox state from its probes (shown on the dashboard and in /metrics)
OUTBOX_KEYS = ("pending_batches", "held_in_memory", "dropped_batches", "disk_full", "disk_error",
               "held_unsynced", "rejected_batches")
# A sender's clock (sent_at, X-Sent-At) is epoch seconds from 1970 to 2286: a board without a
# real-time clock that booted in 1970 is still measured; 1e308 or -1e18 is not a clock.
MAX_SENT_AT = 1e10
_NODE_OF, _SEQ_OF, _ROWS_OF, _ALERTS_OF = (attrgetter(f) for f in Batch._fields)
log = logging.getLogger(__name__)


class Hub:
    """The hub's view: stored batches, latest value per node/sensor/quantity, node liveness."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeState] = {}
        self._latest: dict[str, dict[str, dict[str, Row]]] = {}
        self._views = ViewCache()
        self.readings_stored = 0
        self.duplicates = 0
        self.rejected = 0
        # called with (node, rows) for every newly stored pushed batch; must be cheap
        self.on_batch: Callable[[str, list[Row]], None] | None = None
        # called with (node, rows) for every stored reading, the hub's own included (MQTT publishes
        # them); under the hub's lock, so each must only take note and return
        self.listeners: list[Callable[[str, list[Row]], None]] = []
        # with several hubs: the Raft member acknowledgements and singleton jobs go through
        self.cluster: Any = None
        self.exporters: list[Any] = []  # actors.hub.export.Exporter, for the web's views
        self.notifier: Any = None  # actors.hub.notify.Notifier, for the web's views and its test button
        self.quantities = FleetQuantities()  # what each node declared beyond the built-ins
        self._load()

    def _load(self) -> None:
        """Warm the in-memory view from the store after a restart."""
        for row in self.store.nodes():
            self._nodes[row["name"]] = NodeState(
                row["name"], row["role"], row["profile"], row["push_interval"], row["last_seen"],
                row["last_seq"], row["info"], row["clock_offset"])
            self._take_quantities(row["name"], row["info"])
        for node, row in self.store.latest():
            self._nodes.setdefault(node, NodeState(node))
            self._latest.setdefault(node, {}).setdefault(row.sensor, {})[row.quantity] = row

    def hello(self, info: dict[str, Any], sent_at: float | None = None) -> dict[str, Any]:
        """A node introduces itself (role, profile, push interval); returns its last acked seq.

        A refused hello (BadRequest, or a store that cannot write) changes nothing."""
        h = validate_hello(info)
        quantities = self.quantities.parse(h.node, h.info.get("quantities"))
        sent = plausible_sent_at(sent_at)
        now = self._clock()
        with self._lock:
            st = self._nodes.get(h.node)
            offset = st.clock_offset if st is not None else None
            if sent is not None:
                offset = round(sent - now, 3)
            # hello is also the spokes' heartbeat: write to disk only when something changed
            changed = st is None or (st.role, st.profile, st.push_interval, st.info) != \
                (h.role, h.profile, h.push_interval, h.info)
            # a new boot id is a restart, however quickly the node came back (its pushes never
            # stopped long enough for it to go quiet)
            old_boot = st.info.get("boot") if st is not None else None
            restarted = old_boot is not None and h.info.get("boot") != old_boot
            if changed:
                # written before the node changes in memory, under the lock a push's registration
                # takes too: a write that fails (a full disk) leaves the hub as it was
                self.store.upsert_node(h.node, h.role, h.profile, h.push_interval, now, offset, dict(h.info))
            st = st or self._nodes.setdefault(h.node, NodeState(h.node))
            st.role, st.profile, st.push_interval, st.info = h.role, h.profile, h.push_interval, h.info
            self.quantities.set(h.node, quantities)
            if restarted:
                st.restarts += 1
                st.restarted_at = now
                st.reachable = None  # its agent is a new process, on a new port: probe it afresh
                log.info("node %s restarted (boot %s -> %s)", h.node, old_boot, h.info.get("boot"))
            st.last_seen = now
            self._observe_clock(st, sent, now)
            last_seq = st.last_seq
            warm = self._changed([h.node], now)
        encode(warm)
        return {"last_seq": last_seq}

    def push(self, batches: Any, sent_at: float | None = None) -> dict[str, Any]:
        """Commit batches idempotently on (node, seq), then acknowledge them.

        All or nothing: one bad batch rejects the call with BadRequest and stores nothing."""
        now = self._clock()
        try:
            if not isinstance(batches, list):
                batches = [batches]
            if not batches:
                raise BadRequest("no batches; expected a batch or a list of 1 to "
                                 f"{MAX_BATCHES_PER_CALL} batches")
            if len(batches) > MAX_BATCHES_PER_CALL:
                raise BadRequest(f"at most {MAX_BATCHES_PER_CALL} batches per push, got {len(batches)}")
            checked, series = check_push(batches, now, self.quantities.limits)
        except BadRequest:
            self.count_rejected()
            raise
        sent = plausible_sent_at(sent_at)
        seen = dict.fromkeys(map(_NODE_OF, checked), now)
        new = self.store.commit_batches(checked, now, seen, series)
        # the pairs are distinct batches of `checked`: as many means every batch was new
        if len(new) == len(checked):
            stored = checked
        else:
            fresh = set(new)
            stored = [b for b in checked if (b.node, b.seq) in fresh]
        with self._lock:
            # A node is registered with its batches: a refused push, or a commit that fails,
            # leaves no node behind (in memory or in the store).
            unknown = sorted(n for n in seen if n not in self._nodes)
            for n in unknown:  # its registry row was written with its batches
                self._nodes[n] = NodeState(n)
            for n in seen:
                st = self._nodes[n]
                st.last_seen = now
                self._observe_clock(st, sent, now)
            self._took(stored)
            duplicates = len(checked) - len(new)
            self.duplicates += duplicates
            warm = self._changed(seen, now)
        encode(warm)
        if any(map(_ALERTS_OF, stored)):
            self._alerts_changed()
        return {"acked": list(map(_SEQ_OF, checked)), "duplicates": duplicates, "hello": unknown}

    def count_rejected(self) -> None:
        """Count one push refused as malformed (harvester_hub_rejected_pushes_total)."""
        with self._lock:
            self.rejected += 1

    def record_alerts(self, node: str, events: list[dict[str, Any]]) -> None:
        """Alert events raised on the hub itself (no batch, no network hop)."""
        checked = [validate_event(e, node, f"local alert {i}") for i, e in enumerate(events)]
        if self.store.keep_batches:  # a batch of their own, so the other hubs get them too
            self.store.commit_own(node, [], checked, self._clock())
        else:
            self.store.record_alerts(checked, self._clock())
        self._alerts_changed()

    def _alerts_changed(self) -> None:
        """Tell the notifier now rather than at its next tick."""
        if self.notifier is not None:
            self.notifier.nudge()

    def alerts(self, active_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        """Alerts the hub knows: active ones, or the most recent ones including cleared (at most limit)."""
        return self.store.alerts(active_only, limit)

    def history(self, node: str, sensor: str, quantity: str, since: float, until: float,
                step: str, limit: int = 10_000) -> list[list[float]]:
        """Stored points of one series in [since, until): raw, or the 1m/1h rollups."""
        return self.store.history(node, sensor, quantity, since, until, step, limit)

    def summaries(self, day: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        """Stored daily summaries: one day's, or the most recent days first."""
        return self.store.summaries(day, limit)

    def acknowledge(self, alert_id: int, by: str) -> dict[str, Any] | None:
        """Acknowledge an active alert at the hub; the caller forwards it to the node that raised it.

        With several hubs the acknowledgement goes through Raft, so every hub applies it
        (actors.hub.cluster.NoMajority when the hubs cannot agree: nothing is acknowledged)."""
        if self.cluster is None:
            done = self.store.acknowledge(alert_id, by, self._clock())
            self._alerts_changed()
            return done
        alert = self.store.alert(alert_id)
        if alert is None or not alert["active"]:
            return None
        self.cluster.acknowledge(episode_key(alert), by, self._clock())
        self._alerts_changed()
        return self.store.alert(alert_id)

    def apply_ack(self, key: str, by: str, ts: float) -> None:
        """An acknowledgement the cluster agreed on (from Raft's apply, on every hub)."""
        self.store.acknowledge_episode(json.loads(key), by, ts)
        self._alerts_changed()

    def _observe_clock(self, st: NodeState, sent: float | None, now: float) -> None:
        """Record the node's clock offset from a plausible_sent_at() value (None: not measured)."""
        if sent is not None:
            offset = sent - now
            if abs(offset) > CLOCK_SKEW_LIMIT and (st.clock_offset is None or abs(st.clock_offset) <= CLOCK_SKEW_LIMIT):
                log.warning("node %s clock is off by %s", st.name, offset_text(offset))
            st.clock_offset = round(offset, 3)

    def ingest_local(self, node: str, readings: list[Reading]) -> None:
        """The hub's own readings, without a network hop."""
        now = self._clock()
        rows = [to_row(r) for r in readings]
        if self.store.keep_batches:  # as a batch, so the other hubs get them too
            seq = self.store.commit_own(node, rows, [], now)
        else:
            self.store.insert_local(node, rows, now)
            seq = 0
        with self._lock:
            st = self._nodes.get(node)
            if st is None:
                st = self._nodes[node] = NodeState(node, role="hub", last_seen=now)
                self.store.upsert_node(node, "hub", st.profile, st.push_interval, now, None, {})
            st.last_seen = now
            st.last_seq = max(st.last_seq, seq)
            self._remember(node, rows)
            warm = self._changed([node], now)
        encode(warm)

    # -- several hubs ---------------------------------------------------------------------
    def cluster_view(self, name: str) -> dict[str, Any]:
        """GET /api/cluster: the hubs, who leads, how far behind each is (one hub leads itself)."""
        if self.cluster is not None:
            return self.cluster.view()
        return {"self": name, "leader": name, "term": 0, "has_quorum": True,
                "members": [{"name": name, "address": None, "online": True, "role": "leader", "lag_s": 0.0}]}

    def node_infos(self, names: set[str] | None = None) -> dict[str, dict[str, Any]]:
        """What a hello told this hub about each node (all, or those named), for a peer hub."""
        with self._lock:
            return {n: {"role": st.role, "profile": st.profile, "push_interval": st.push_interval,
                        "info": st.info} for n, st in self._nodes.items() if names is None or n in names}

    def learn_nodes(self, infos: Any) -> None:
        """Register nodes a peer hub knows and this one does not (checked as a hello is)."""
        if not isinstance(infos, dict):
            return
        for name, known in list(infos.items())[:10_000]:
            with self._lock:
                if name in self._nodes:
                    continue
            if not isinstance(known, dict):
                continue
            try:
                h = validate_hello({"node": name, "role": known.get("role"), "profile": known.get("profile"),
                                    "push_interval": known.get("push_interval"), **(known.get("info") or {})})
            except (BadRequest, TypeError):
                log.warning("a peer hub described node %r in a way this hub refuses; skipped", name)
                continue
            with self._lock:
                if h.node in self._nodes:
                    continue
                self.store.upsert_node(h.node, h.role, h.profile, h.push_interval, None, None, dict(h.info))
                self._nodes[h.node] = NodeState(h.node, h.role, h.profile, h.push_interval, info=h.info)
            self._take_quantities(h.node, h.info)

    def _take_quantities(self, node: str, info: dict[str, Any]) -> None:
        """A node's declarations from a stored or copied hello (already taken once: a refusal now
        means another node took the name since, which its own hello would have been told)."""
        try:
            self.quantities.set(node, self.quantities.parse(node, info.get("quantities")))
        except BadRequest as exc:
            log.warning("%s: its declared quantities are not taken: %s", node, exc)

    def peer_seen(self, name: str) -> None:
        """A peer hub answered: its liveness on this hub's view (it pushes nothing here)."""
        now = self._clock()
        with self._lock:
            st = self._nodes.get(name)
            if st is None:
                return
            st.last_seen = now
            warm = self._changed([name], now)
        encode(warm)

    def ingest_peer(self, node: str, fetched: list[tuple[int, str, str]]) -> int:
        """Batches of `node` copied from a peer hub, as (seq, rows JSON, alerts JSON); returns how
        many were new. Stored exactly like a push (idempotent on (node, seq)), except that a copy
        says nothing about when the node was last heard from."""
        batches = []
        for seq, rows_json, alerts_json in fetched:
            rows = [Row._make(r) for r in json.loads(rows_json)]
            batches.append(Batch(node, int(seq), rows, json.loads(alerts_json)))
        if not batches:
            return 0
        with self._lock:
            if node not in self._nodes:
                self.store.upsert_node(node, "spoke", "wasm", 5.0, None, None, {})
                self._nodes[node] = NodeState(node)
        new = set(self.store.commit_batches(batches, self._clock(), {}))
        if any(b.alerts for b in batches if (node, b.seq) in new):
            self._alerts_changed()
        now = self._clock()
        with self._lock:
            self._took([b for b in batches if (node, b.seq) in new])
            warm = self._changed([node], now)
        encode(warm)
        return len(new)

    def _took(self, batches: list[Batch]) -> None:
        """Newly stored batches in memory (under the lock): each node's seq, its latest values, and
        the hub plugins' queue (they watch other nodes' readings, not the hubs' own).

        A push's batches are nearly always one node's (a drained backlog is up to 500 of them):
        its rows are remembered in one pass rather than a call per batch."""
        if len(set(map(_NODE_OF, batches))) <= 1:
            per_node = {batches[0].node: batches} if batches else {}
        else:
            per_node = {}
            for b in batches:
                per_node.setdefault(b.node, []).append(b)
        for node, own in per_node.items():
            st = self._nodes[node]
            st.last_seq = max(st.last_seq, max(map(_SEQ_OF, own)))
            self._remember(node, own[0].rows if len(own) == 1 else list(chain.from_iterable(map(_ROWS_OF, own))))
            if self.on_batch is not None and st.role != "hub":
                for b in own:
                    if b.rows:
                        self.on_batch(node, b.rows)

    def _remember(self, node: str, rows: list[Row]) -> None:
        per_node = self._latest.setdefault(node, {})
        for row in rows:
            sensor, quantity = row.sensor, row.quantity
            per_sensor = per_node.get(sensor)
            if per_sensor is None:
                per_sensor = per_node[sensor] = {}
            old = per_sensor.get(quantity)
            # A backfilled batch must not replace a newer value.
            if old is None or row.ts >= old.ts:
                per_sensor[quantity] = row
        self.readings_stored += len(rows)
        for listener in self.listeners:
            listener(node, rows)

    def set_reachable(self, node: str, reachable: bool, health: dict[str, Any] | None = None) -> None:
        """Record the outcome of the hub's last probe of the node's agent (and its actors' health).

        A probe that finds what the last one found changes nothing: a thousand spokes' health is
        asked about 33 times a second, and each change makes the node's view be built again."""
        now = self._clock()
        with self._lock:
            st = self._nodes.get(node)
            if st is None:
                return
            changed = st.reachable != reachable
            if isinstance(health, dict):
                actors = {k.rsplit(".", 1)[-1]: {"state": v.get("state"), "last_error": v.get("last_error")}
                          for k, v in health.items() if isinstance(v, dict) and "state" in v}
                outbox = health.get("outbox")
                kept = {k: outbox.get(k) for k in OUTBOX_KEYS} if isinstance(outbox, dict) else None
                changed = changed or actors != st.health or kept != st.outbox
                st.health, st.outbox = actors, kept
            if not changed:
                return
            if st.reachable != reachable:
                if st.reachable is not None:
                    log.info("node %s %s", node, "answers again" if reachable else "stopped answering")
                st.reachable = reachable
            warm = self._changed([node], now)
        encode(warm)

    def reachability(self, node: str) -> bool | None:
        """The outcome of the last probe of the node's agent; None if it was never reached or refused."""
        with self._lock:
            st = self._nodes.get(node)
            return None if st is None else st.reachable

    def liveness(self) -> list[tuple[str, float, bool | None, Any]]:
        """Each spoke for the prober: its name, how long since it was last heard from, in push
        intervals, what its last probe found, and its boot id."""
        now = self._clock()
        with self._lock:
            return [(n, (now - st.last_seen) / st.push_interval if st.last_seen is not None else float("inf"),
                     st.reachable, st.info.get("boot"))
                    for n, st in sorted(self._nodes.items()) if st.role != "hub"]

    def _changed(self, names: Iterable[str], now: float) -> list[CachedView]:
        """Mark these nodes changed (call under the lock) and, while someone reads the views,
        build theirs again now; encode() them once the lock is released.

        Whoever changes a node builds its view, so that a request only assembles views. Left to
        the next request, the views of the nodes a probe run changed (a few hundred at a thousand
        spokes) are built and encoded at once by that request: 20-60 ms instead of about one."""
        for name in names:
            self._nodes[name].version += 1
        return self._views.refresh(names, self._nodes, self._latest, now) if self._views.watched(now) else []

    def snapshot(self) -> dict[str, Any]:
        """Every node with liveness and each sensor's latest quantities (the /api/readings body).

        The node dicts are shared with other callers and the cache: read them, never change them."""
        with self._lock:
            now = self._clock()  # see snapshot_bytes
            entries = self._views.views(self._nodes, self._latest, now)
        return {"ts": now, "nodes": [e.view for e in entries]}

    def snapshot_json(self) -> str:
        """json.dumps(snapshot()), character for character (snapshot_bytes, decoded)."""
        return self.snapshot_bytes().decode()

    def snapshot_bytes(self) -> bytes:
        """The snapshot as UTF-8 JSON, joined from each node's view encoded once per change (GET /api/readings).

        The time is read once the lock is held: a view holds from when it was built, and the
        views pushes built while this call waited for the lock (a thousand a second with a
        thousand spokes) would otherwise all look built in its future, and be built and encoded
        again for it, the longer the wait the more."""
        with self._lock:
            now = self._clock()
            entries = self._views.views(self._nodes, self._latest, now)
        # One join makes the one large buffer: concatenating the joined views with the head and
        # the tail copied 1.5 MB (a thousand nodes) twice more, and faulted in fresh pages each time.
        parts = [e.json_bytes() for e in entries]
        head, tail = b'{"ts": ' + json.dumps(now).encode() + b', "nodes": [', b"]}"
        if not parts:
            return head + tail
        parts[0] = head + parts[0]
        parts[-1] += tail  # (the same part when there is one node)
        return b", ".join(parts)

    def node_names(self) -> list[str]:
        """Known nodes."""
        with self._lock:
            return sorted(self._nodes)

    def has_series(self, node: str, sensor: str | None = None, quantity: str | None = None) -> bool:
        """True when the node (sensor, quantity) is known to the hub."""
        with self._lock:
            sensors = self._latest.get(node)
            if node not in self._nodes:
                return False
            if sensor is None:
                return True
            if sensors is None or sensor not in sensors:
                return self.store.series_exists(node, sensor, quantity)
            return quantity is None or quantity in sensors[sensor] or self.store.series_exists(node, sensor, quantity)


def encode(views: list[CachedView]) -> None:
    """Encode views built under the hub's lock, after it (a cached view is replaced, never changed)."""
    for view in views:
        view.json_bytes()


def episode_key(alert: dict[str, Any]) -> str:
    """The name of an alert episode every hub agrees on (row ids differ from hub to hub)."""
    return json.dumps([alert["raised_by"], alert["plugin"], alert["alert"], alert["since"]])


def plausible_sent_at(value: Any) -> float | None:
    """A sender's clock reading as a float when it is epoch seconds in 0..MAX_SENT_AT, else None.

    The clock is advisory (it only flags a node whose clock is off), so over Pyro5 an absurd
    value is ignored rather than refusing the batches it came with."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_SENT_AT:
        return float(value)  # NaN fails the comparison; a huge int never reaches float()
    return None


def offset_text(seconds: float) -> str:
    """A clock offset for a log line: `+120.5 s`, or in days when it is more than one."""
    if abs(seconds) < 86400:
        return f"{seconds:+.1f} s"
    return f"{seconds / 86400:+.1f} days ({seconds:+.0f} s)"
