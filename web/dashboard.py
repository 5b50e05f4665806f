"""What the page shows, assembled from the hub (readings, liveness, alerts) and the spokes (LEDs, buzzer, pings)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from actors.hub.state import Hub
from web import view
from web.live import LiveView
from web.polling import StatePoller
from web.upstream import Upstream

PIECE = 200  # items of a dict or list encoded per json.dumps call by encode_in_pieces
# (node, sensor, quantity, unit) of every series, as the series list was last built from
SeriesKey = list[tuple[str, str, str, str]]


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def encode_in_pieces(value: Any) -> str:
    """json.dumps(value, allow_nan=False, ensure_ascii=False), character for character, with large
    dicts and lists encoded PIECE items at a time.

    The C encoder holds the GIL for the whole call: the update of a thousand nodes (2 MB) held
    it for about 50 ms, and every push and request in the hub waited. Between pieces, other
    threads get their turn."""
    if isinstance(value, dict) and len(value) > PIECE:
        items = list(value.items())
        parts = [_dumps(dict(items[i:i + PIECE]))[1:-1] for i in range(0, len(items), PIECE)]
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) \
            and any(isinstance(v, (dict, list)) and len(v) > PIECE for v in value.values()):
        return "{" + ", ".join(f"{_dumps(k)}: {encode_in_pieces(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and len(value) > PIECE:
        return "[" + ", ".join(_dumps(value[i:i + PIECE])[1:-1] for i in range(0, len(value), PIECE)) + "]"
    return _dumps(value)


class Dashboard:
    """Builds the page's view model; spokes' actuator states come from cached, bounded polls."""

    def __init__(self, hub: Hub, upstream: Upstream, local_node: str = "hub",
                 local_actors: frozenset[str] = frozenset(), clock: Callable[[], float] = time.time,
                 live_max_age: float = 1.0) -> None:
        self.hub, self.upstream = hub, upstream
        self.local_node, self.local_actors = local_node, local_actors
        self._clock = clock
        self.leds = StatePoller(upstream, "leds", "state", ttl=1.0)
        self.buzzer = StatePoller(upstream, "buzzer", "state", ttl=1.0)
        self.pings = StatePoller(upstream, "agent", "ping", ttl=2.0)
        self.jobs = StatePoller(upstream, "jobs", "list", ttl=10.0)
        # GET /api/dashboard: one build per second shared by every open page (see web/live.py)
        self.live = LiveView(lambda: encode_in_pieces(self.update()), live_max_age)
        # the series list, its signature and its JSON, and what they were built from (see series())
        self._series: tuple[SeriesKey, str, list[dict[str, str]], bytes] = ([], view.series_signature([]), [], b'[]')

    def actors_of(self, node: dict[str, Any]) -> set[str]:
        """The actor names a node runs, as the hub's probes last saw them (the hub's own: from its agent)."""
        if node["name"] == self.local_node:
            return set(self.local_actors)
        return set(node.get("actors") or {})

    def _polled(self, nodes: list[dict[str, Any]], patient: bool = True) -> tuple[dict, dict, dict]:
        if not self.upstream.available:
            return {}, {}, {}
        online = [n for n in nodes if n["online"]]
        with_leds = [n["name"] for n in online if "leds" in self.actors_of(n)]
        with_buzzer = [n["name"] for n in online if "buzzer" in self.actors_of(n)]
        pinged = [n["name"] for n in nodes if n["role"] != "hub" and "agent" in (n.get("actors") or {})]
        return (self.leds.get(with_leds, patient), self.buzzer.get(with_buzzer, patient),
                self.pings.get(pinged, patient))

    def model(self, patient: bool = True) -> dict[str, Any]:
        """Everything the page renders: cards, LED and buzzer states, alerts, chartable series, hubs, exports,
        notification channels. `patient=False`: LED strips, buzzers and pings never asked before
        show as not answered yet rather than hold the build for their first answers."""
        snapshot = self.hub.snapshot()
        now, nodes = snapshot["ts"], snapshot["nodes"]
        leds, buzzer, pings = self._polled(nodes, patient)
        lookup = self.hub.quantities.lookup
        cards = [view.node_card(n, now, self.actors_of(n), pings.get(n["name"]), lookup) for n in nodes]
        offline = {"ok": False, "error": "node offline"}
        led_views = {c["name"]: view.leds_view(leds.get(c["name"], None if c["online"] else offline))
                     for c in cards if c["leds"]}
        buzzer_views = {c["name"]: view.buzzer_view(buzzer.get(c["name"], None if c["online"] else offline), now)
                        for c in cards if c["buzzer"]}
        alerts = [view.alert_view(a, now) for a in self.hub.alerts(active_only=True)]
        series_sig, series = self.series(nodes)
        online = sum(1 for n in nodes if n["online"])
        jobs, day, summary = self._jobs(nodes, now)
        hubs = view.hubs_view(self.hub.cluster_view(self.local_node))  # None for a single hub: no panel
        exports = view.exports_view(self.exports())  # None without [[export]] targets: no panel
        notify = view.notify_view(self.notifications())  # None without [[notify]] channels: no panel
        return {"ts": now, "status": f"{online}/{len(nodes)} nodes online", "cards": cards, "leds": led_views,
                "buzzer": buzzer_views, "alerts": alerts, "series": series, "series_sig": series_sig, "jobs": jobs,
                "summary_day": day, "summary": summary, "hubs": hubs, "exports": exports, "notify": notify, "sig": view.signature(cards),
                "alerts_sig": view.alerts_signature(alerts), "jobs_sig": view.jobs_signature(jobs, day),
                "hubs_sig": view.hubs_signature(hubs), "exports_sig": view.exports_signature(exports),
                "notify_sig": view.notify_signature(notify)}

    def series(self, nodes: list[dict[str, Any]] | None = None) -> tuple[str, list[dict[str, str]]]:
        """Every chartable series (id, label, unit) and a short signature of the list.

        The page's update carries only the signature; the page fetches the list (GET /api/series)
        when it changes. At a thousand nodes the list is 10,000 entries: it was about 1 MB of
        every update, and building it about 16 ms of every build. It is rebuilt only when a
        series appears, goes or changes its unit."""
        _, sig, series, _ = self._built_series(nodes)
        return sig, series

    def series_bytes(self) -> bytes:
        """GET /api/series: {"sig": ..., "series": [...]} as JSON, the list encoded once per change."""
        _, sig, _, data = self._built_series()
        return b'{"sig": ' + json.dumps(sig).encode() + b', "series": ' + data + b"}"

    def _built_series(self, nodes: list[dict[str, Any]] | None = None) -> tuple[SeriesKey, str, list, bytes]:
        nodes = self.hub.snapshot()["nodes"] if nodes is None else nodes
        key = [(n["name"], s, q, r["unit"]) for n in nodes for s, qs in n["sensors"].items() for q, r in qs.items()]
        built = self._series
        if key != built[0]:  # builds may race (a page render and the live update): each tuple is whole
            series = [{"id": f"{n}/{s}/{q}", "label": f"{n} · {s} · {view.LABELS.get(q, q)}", "unit": u}
                      for n, s, q, u in key]
            built = self._series = (key, view.series_signature(key), series, encode_in_pieces(series).encode())
        return built

    def exports(self) -> list[dict[str, Any]]:
        """Every export target's status (GET /api/exports, /metrics, the Exports panel); empty without any."""
        return [e.status() for e in self.hub.exporters]

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification channel's status (GET /api/notify, /metrics, the Notifications panel); empty
        without a notifier (no [[notify]] channel)."""
        notifier = self.hub.notifier
        return notifier.status() if notifier is not None else []

    def jobs_raw(self, nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Every online node's jobs as its jobs actor lists them (cached ~10 s)."""
        nodes = self.hub.snapshot()["nodes"] if nodes is None else nodes
        if not self.upstream.available:
            return {}
        names = [n["name"] for n in nodes if n["online"] and "jobs" in self.actors_of(n)]
        return self.jobs.get(names)

    def _jobs(self, nodes: list[dict[str, Any]], now: float) -> tuple[list[dict[str, Any]], str | None, list]:
        polled = self.jobs_raw(nodes)
        jobs = [view.job_view(node, job, now) for node in sorted(polled) if polled[node]["ok"]
                for job in polled[node]["value"]]
        latest = self.hub.summaries(limit=1)
        day = latest[0]["day"] if latest else None
        summary = [view.summary_view(r) for r in self.hub.summaries(day)] if day else []
        return jobs, day, summary

    def update(self) -> dict[str, Any]:
        """The page's live update: the same model, flattened to what changes between refreshes.

        Only its first build waits for first answers from the nodes: a fleet's LED strips appear
        as the hub's probes find them, and at a thousand nodes the first poll of them all took
        longer than the bounded wait, so a build held 2 s and every page waited for it."""
        m = self.model(patient=self.live.builds == 0)
        values = {r["key"]: {k: r[k] for k in ("text", "cls", "title", "bar", "tag")}
                  for c in m["cards"] for s in c["sections"] for r in s["rows"]}
        values.update({f"alert/{a['id']}/since": {"text": a["since"]} for a in m["alerts"]})
        values.update({h["key"]: {"text": h["lag"]} for h in (m["hubs"] or {}).get("hubs", [])})
        values.update(view.exports_values(m["exports"]))
        values.update(view.notify_values(m["notify"]))
        nodes = {c["name"]: {"online": c["online"], "status": c["status"], "warning": c["warning"]} for c in m["cards"]}
        return {"ts": m["ts"], "status": m["status"], "sig": m["sig"], "alerts_sig": m["alerts_sig"],
                "jobs_sig": m["jobs_sig"], "hubs_sig": m["hubs_sig"], "exports_sig": m["exports_sig"],
                "notify_sig": m["notify_sig"],
                "alert_count": len(m["alerts"]), "nodes": nodes, "values": values, "leds": m["leds"],
                "buzzer": m["buzzer"], "series_sig": m["series_sig"]}

    def actuators(self) -> dict[str, Any]:
        """GET /api/actuators: every LED strip and buzzer the fleet has, as last polled (raw states)."""
        nodes = self.hub.snapshot()["nodes"]
        leds, buzzer, _ = self._polled(nodes)
        out: dict[str, Any] = {}
        for n in nodes:
            actors = self.actors_of(n)
            entry = {}
            for actor, polled in (("leds", leds), ("buzzer", buzzer)):
                if actor in actors:
                    r = polled.get(n["name"]) if n["online"] else {"ok": False, "error": "node offline"}
                    entry[actor] = {"ok": bool(r and r["ok"]), "state": r["value"] if r and r["ok"] else None,
                                    "error": None if r and r["ok"] else (r or {}).get("error", "no answer yet")}
            if entry:
                out[n["name"]] = entry
        return {"ts": self._clock(), "nodes": out}
