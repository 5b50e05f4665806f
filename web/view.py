"""The dashboard's view model: every value formatted once, here, for the server-rendered page and
for the page's live updates alike (the JavaScript only copies text and classes)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from hal.iaq import band_of
from hal.readings import QUANTITIES
from hal.timesync import CLOCK_SET_AFTER, date_text

SYSTEM_QUANTITIES = frozenset({"cpu_temperature", "cpu_load", "memory_used", "memory_total", "memory_percent",
                               "uptime"})
NETWORK_QUANTITIES = frozenset({"rtt", "packet_loss"})
RESTART_SHOWN_S = 3600.0  # a node's card says it restarted for this long after
LABELS = {"temperature": "Temperature", "humidity": "Humidity", "pressure": "Pressure",
          "gas_resistance": "Gas resistance", "iaq": "Air quality (IAQ)", "cpu_temperature": "CPU temperature",
          "cpu_load": "CPU load", "memory_percent": "Memory", "uptime": "Uptime", "rtt": "RTT",
          "packet_loss": "Packet loss", "co2": "CO₂", "illuminance": "Light", "soil_moisture": "Soil moisture"}
# Quantities whose rows have a look of their own; every other one (co2, light, a node's declared
# ones) shows its value on a bar across its plausible range, with the range in the row's title.
OWN_LOOK = frozenset({"temperature", "humidity", "pressure", "gas_resistance", "iaq", *SYSTEM_QUANTITIES,
                      *NETWORK_QUANTITIES})
Lookup = Callable[[str, str], Any]  # (quantity, node) -> hal.readings.Quantity or None
WARM_C, HOT_C = 60.0, 75.0  # CPU temperature bands: cool below 60 °C, warm below 75 °C, hot from 75 °C
Row = dict[str, Any]


def cpu_band(celsius: float) -> str:
    """cool / warm / hot for a CPU temperature."""
    return "cool" if celsius < WARM_C else "warm" if celsius < HOT_C else "hot"


def iaq_class(band: str) -> str:
    """A CSS class for an IAQ band name ("unhealthy for sensitive groups" -> iaq-sensitive)."""
    return "iaq-" + {"unhealthy for sensitive groups": "sensitive", "very unhealthy": "very-unhealthy"}.get(band, band)


def iaq_text(index: float) -> tuple[str, str]:
    """An IAQ index as a card shows it, and its band: `51 · moderate` for 50.2.

    The bands are whole numbers with inclusive upper bounds (0-50 good, 51-150 moderate), so
    the index is shown rounded up: rounded to the nearest, 50.2 read "50 · moderate"."""
    band = band_of(index)
    return f"{math.ceil(index)} · {band}", band


def number(value: float, unit: str = "") -> str:
    """A reading value with sensible precision and its unit."""
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def ms_text(ms: float) -> str:
    """A round trip in ms: two decimals below 1 ms (loopback), one below 100, none above."""
    return f"{ms:.2f} ms" if ms < 1 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def age_text(seconds: float | None) -> str:
    """`3 s ago`, `5 min ago`, `2 h ago`, or `never`."""
    if seconds is None:
        return "never"
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def duration_text(seconds: float) -> str:
    """An uptime: `4 d 3 h`, `3 h 12 min` or `12 min`."""
    m = int(seconds // 60)
    d, h, m = m // 1440, (m % 1440) // 60, m % 60
    return f"{d} d {h} h" if d else f"{h} h {m} min" if h else f"{m} min"


def _row(key: str, label: str, text: str, cls: str = "", title: str = "", series: str | None = None,
         bar: float | None = None, tag: str = "") -> Row:
    return {"key": key, "label": label, "text": text, "cls": cls, "title": title, "series": series,
            "bar": None if bar is None else round(max(0.0, min(1.0, bar)), 3), "tag": tag}


def _unavailable(key: str, label: str, r: dict[str, Any]) -> Row:
    return _row(key, label, "unavailable", "unavailable", r.get("reason") or "no value")


def _reading_row(key: str, quantity: str, r: dict[str, Any], series: str, known: Any = None) -> Row:
    label = LABELS.get(quantity, quantity.replace("_", " ").capitalize())
    if r["value"] is None:
        return _unavailable(key, label, r)
    if quantity not in OWN_LOOK and known is not None:
        return _ranged_row(key, label, r, series, known)
    v, cls, tag = r["value"], ["stale"] if r["stale"] else [], ""
    if quantity == "gas_resistance":
        text = f"{v / 1000:.1f} kΩ"
    elif quantity == "uptime":
        text = duration_text(v)
    elif quantity == "iaq":
        text, band = iaq_text(v)
        tag = "calibrating" if r["quality"] == "calibrating" else ""
        cls.append(iaq_class(band))
    else:
        text = number(v, r["unit"])
    if quantity == "cpu_temperature":
        cls.append(cpu_band(v))
    bar = v / 100 if quantity == "cpu_load" else None
    title = "stale: no fresh reading" if r["stale"] else ""
    return _row(key, label, text, " ".join(cls), title, series, bar, tag)


def _ranged_row(key: str, label: str, r: dict[str, Any], series: str, q: Any) -> Row:
    """A value on a bar across its quantity's plausible range (low..high), described in the title."""
    v = r["value"]
    about = f"{q.description}; " if q.description else ""
    title = f"{about}range {q.low:g} to {q.high:g} {q.unit}".strip()
    if r["stale"]:
        title = "stale: no fresh reading; " + title
    cls = "stale" if r["stale"] else ""
    return _row(key, label, number(v, r["unit"]), cls, title, series, (v - q.low) / (q.high - q.low),
                "calibrating" if r["quality"] == "calibrating" else "")


def _system_rows(node: str, sensor: str, q: dict[str, Any]) -> list[Row]:
    rows = []
    base = f"{node}/{sensor}"
    for quantity in ("cpu_temperature", "cpu_load"):
        if quantity in q:
            rows.append(_reading_row(f"{base}/{quantity}", quantity, q[quantity], f"{base}/{quantity}"))
    used, total, pct = q.get("memory_used"), q.get("memory_total"), q.get("memory_percent")
    if used or total or pct:
        key = f"{base}/memory"
        series = f"{base}/memory_percent" if pct else f"{base}/memory_used"
        if used is None or used["value"] is None:
            rows.append(_unavailable(key, "Memory", used or pct or total or {}))
        else:
            text = f"{used['value']:,.0f}".replace(",", " ")
            if total and total["value"]:
                text += f" / {total['value']:,.0f}".replace(",", " ")
            text += " MB"
            share = pct["value"] if pct and pct["value"] is not None else None
            if share is not None:
                text += f" · {share:.0f} %"
            rows.append(_row(key, "Memory", text, "stale" if used["stale"] else "", "", series,
                             None if share is None else share / 100))
    if "uptime" in q:
        rows.append(_reading_row(f"{base}/uptime", "uptime", q["uptime"], f"{base}/uptime"))
    return rows


def _network_row(node: str, sensor: str, q: dict[str, Any]) -> Row:
    """One network target: 🟢/🔴 with its RTT and loss, as measured by the node itself."""
    target = sensor.split("-", 1)[1] if "-" in sensor else sensor
    rtt, loss = q.get("rtt"), q.get("packet_loss")
    key = f"{node}/{sensor}/link"
    ok = rtt is not None and rtt["value"] is not None and not rtt["stale"] and \
        (loss is None or loss["value"] is None or loss["value"] < 100)
    if ok:
        text = f"🟢 {ms_text(rtt['value'])}"
        if loss is not None and loss["value"]:
            text += f" · {loss['value']:.0f} % loss"
    else:
        why = "stale" if rtt is not None and rtt["stale"] else (rtt or {}).get("reason") or "no answer"
        text = f"🔴 {why}"
    return _row(key, f"→ {target}", text, "ok" if ok else "bad", "round trip measured by the node",
                f"{node}/{sensor}/rtt" if rtt else None)


def _sections(node: dict[str, Any], ping: dict[str, Any] | None, lookup: Lookup | None = None) -> list[dict[str, Any]]:
    name, sections, network = node["name"], [], []
    for sensor, q in node["sensors"].items():
        if SYSTEM_QUANTITIES & set(q):
            sections.insert(0, {"title": "System", "rows": _system_rows(name, sensor, q)})
        elif set(q) <= NETWORK_QUANTITIES:
            network.append(_network_row(name, sensor, q))
        else:
            order = ("iaq", "temperature", "humidity", "pressure", "gas_resistance")
            quantities = sorted(q, key=lambda x: (order.index(x) if x in order else len(order), x))
            rows = [_reading_row(f"{name}/{sensor}/{x}", x, q[x], f"{name}/{sensor}/{x}",
                                 (lookup or _builtin)(x, name)) for x in quantities]
            sections.append({"title": sensor.upper() if len(sensor) <= 8 else sensor, "rows": rows})
    if node["role"] != "hub":
        network.insert(0, link_row(node, ping))
    if network:
        sections.append({"title": "Network", "rows": network})
    return sections


def link_row(node: dict[str, Any], ping: dict[str, Any] | None) -> Row:
    """The hub's view of a spoke's link: its probe verdict, with the web app's own ping RTT."""
    key, label, title = f"{node['name']}/link/hub", "Hub link", "the hub's ping of the node's agent"
    if node.get("reachable") is False or (ping is not None and not ping["ok"]):
        why = ping["error"] if ping is not None and not ping["ok"] else "probe failed"
        return _row(key, label, "🔴 not answering", "bad", why)
    if ping is not None and ping["ok"]:
        return _row(key, label, f"🟢 {ms_text(ping['seconds'] * 1000)}", "ok", title)
    if node.get("reachable"):
        return _row(key, label, "🟢 answering", "ok", title)
    return _row(key, label, "⚪ not checked yet", "unknown", title)


def leds_view(result: dict[str, Any] | None, count: int = 11) -> dict[str, Any]:
    """The strip as colour dots: `#rrggbb` per pixel, or unknown when the spoke did not answer."""
    if result is None or not result["ok"]:
        why = "no answer yet" if result is None else result["error"]
        return {"known": False, "pixels": [None] * count, "text": f"unknown: {why}", "brightness": None}
    state = result["value"]
    pixels = ["#{:02x}{:02x}{:02x}".format(*p) for p in state["pixels"]]
    lit = sum(1 for p in state["pixels"] if any(p))
    return {"known": True, "pixels": pixels, "brightness": state["brightness"],
            "text": f"{lit} of {len(pixels)} lit · brightness {state['brightness'] * 100:.0f} %"}


def buzzer_view(result: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The buzzer's state in words: sounding / idle / muted, beep count and the last command."""
    if result is None or not result["ok"]:
        why = "no answer yet" if result is None else result["error"]
        return {"known": False, "state": "unknown", "text": f"unknown: {why}", "detail": ""}
    s = result["value"]
    state = "muted" if s.get("muted") else "sounding" if s.get("active") else "idle"
    text = f"sounding ({s['pattern']})" if state == "sounding" and s.get("pattern") else state
    n = s.get("beeps", 0)
    detail = f"{n} beep{'' if n == 1 else 's'}"
    if s.get("suppressed"):
        detail += f" · {s['suppressed']} muted"
    last = s.get("last_command")
    if isinstance(last, dict) and last.get("command"):
        detail += f" · last: {last['command']} {age_text(now - last['ts'])}"
    return {"known": True, "state": state, "text": text, "detail": detail}


def _builtin(quantity: str, node: str) -> Any:
    return QUANTITIES.get(quantity)


def node_card(node: dict[str, Any], now: float, actors: set[str], ping: dict[str, Any] | None = None,
              lookup: Lookup | None = None) -> dict[str, Any]:
    """One node's card: badges, liveness and its sections of formatted rows."""
    return {"name": node["name"], "role": node["role"], "profile": node["profile"],
            "role_label": "Hub" if node["role"] == "hub" else "Spoke",
            "profile_label": "WASM" if node["profile"] == "wasm" else "Native",
            "online": node["online"], "status": status_text(node, now),
            "warning": warning_text(node),
            "sections": _sections(node, ping, lookup), "leds": "leds" in actors, "buzzer": "buzzer" in actors}


def warning_text(node: dict[str, Any]) -> str:
    """What is wrong with a node beyond being offline: its clock not synchronised, not set or off,
    a spoke's disk refusing its outbox, batches the hub refused."""
    out = []
    outbox = node.get("outbox") or {}
    if node.get("clock_synced") is False:
        held = outbox.get("held_unsynced")
        out.append("clock not synchronised" + (f": {held} batches held until it syncs" if held else ""))
    if not node.get("clock_ok", True):
        out.append(offset_warning(node["clock_offset"], node.get("last_seen")))
    if outbox.get("disk_full"):
        out.append(f"disk full: {outbox.get('held_in_memory', 0)} batches held in memory, "
                   f"{outbox.get('dropped_batches', 0)} dropped")
    if outbox.get("rejected_batches"):
        out.append(f"{outbox['rejected_batches']} batches refused, kept in its outbox")
    return " · ".join(out)


def offset_warning(offset: float, last_seen: float | None) -> str:
    """`clock off by +42 s`, in days past one; a clock that read before 2020 was never set."""
    node_time = None if last_seen is None else last_seen + offset
    if node_time is not None and node_time < CLOCK_SET_AFTER:
        return f"clock not set: it reads {date_text(node_time)}"
    if abs(offset) < 86400:
        return f"clock off by {offset:+.0f} s"
    return f"clock off by {offset / 86400:+.1f} days"


def status_text(node: dict[str, Any], now: float) -> str:
    """`online · seen 2 s ago` / `offline · seen 5 min ago`."""
    seen = age_text(now - node["last_seen"]) if node.get("last_seen") else "never"
    text = f"{'online' if node['online'] else 'offline'} · last seen {seen}"
    restarted = node.get("restarted_at")
    if restarted is not None and now - restarted < RESTART_SHOWN_S:
        text += f" · restarted {age_text(now - restarted)}"
    return text


def digest(value: Any, length: int = 12) -> str:
    """A short hash of a JSON-able value: the page's signatures, which change when what they cover does."""
    return hashlib.sha1(json.dumps(value, ensure_ascii=False).encode()).hexdigest()[:length]


def series_signature(key: list[tuple[str, str, str, str]]) -> str:
    """Changes when a chartable series (node, sensor, quantity, unit) appears, goes or changes its unit."""
    return digest(key)


def signature(cards: list[dict[str, Any]]) -> str:
    """A short hash of the cards' structure: when it changes the page fetches freshly rendered cards.

    Hashed card by card (the same digest as of the whole list's JSON): one json.dumps of a
    thousand cards' shapes holds the GIL for milliseconds, and every request waits behind it."""
    h = hashlib.sha1(b"[")
    for i, c in enumerate(cards):
        shape = (c["name"], c["role"], c["profile"], c["leds"], c["buzzer"],
                 [(s["title"], [(r["key"], r["bar"] is None) for r in s["rows"]]) for s in c["sections"]])
        h.update((", " if i else "").encode() + json.dumps(shape).encode())
    h.update(b"]")
    return h.hexdigest()[:12]


def alert_view(alert: dict[str, Any], now: float) -> dict[str, Any]:
    """An active alert as the page lists it."""
    where = "/".join(x for x in (alert["node"], alert.get("sensor"), alert.get("quantity")) if x)
    return {"id": alert["id"], "severity": alert["severity"], "message": alert["message"] or alert["alert"],
            "where": where, "plugin": alert["plugin"], "raised_by": alert["raised_by"],
            "since": age_text(now - alert["since"]), "acknowledged": alert["acknowledged"],
            "acked_by": alert.get("acked_by") or ""}


def alerts_signature(alerts: list[dict[str, Any]]) -> str:
    """Changes when an alert appears, clears or is acknowledged."""
    return digest([(a["id"], a["acknowledged"]) for a in alerts])


def job_view(node: str, job: dict[str, Any], now: float) -> dict[str, Any]:
    """One scheduled job as the jobs panel shows it."""
    nxt, last = job.get("next_run"), job.get("last_run")
    if not job.get("enabled", True):
        next_text = "disabled"
    elif nxt is None:
        next_text = "-"
    else:
        wait = max(0.0, nxt - now)
        next_text = f"in {wait:.0f} s" if wait < 60 else "in " + duration_text(wait)
    outcome = f"error: {job['last_error']}" if job.get("last_error") else (job.get("last_result") or "")
    took = job.get("duration_ms")
    return {"node": node, "name": job["name"], "trigger": job.get("trigger", ""), "next": next_text,
            "last": age_text(now - last) if last else "never", "outcome": outcome,
            "failed": bool(job.get("last_error")), "took": f"{took:.0f} ms" if took is not None else "",
            "last_ts": last, "next_ts": nxt}


def summary_view(row: dict[str, Any]) -> dict[str, Any]:
    """One series of a daily summary: min / mean / max with the unit, and the alert count."""
    unit = row.get("unit", "")
    return {"where": f"{row['node']} · {row['sensor']} · {LABELS.get(row['quantity'], row['quantity'])}",
            "min": number(row["min"], unit), "mean": number(row["mean"], unit), "max": number(row["max"], unit),
            "n": row["n"], "alerts": row["alerts"]}


def jobs_signature(jobs: list[dict[str, Any]], day: str | None) -> str:
    """Changes when a job ran, failed or was rescheduled, or a new daily summary arrived."""
    key = [(j["node"], j["name"], j["last_ts"], j["outcome"], j["next_ts"]) for j in jobs]
    return digest([key, day], 16)


LAG_OK_S = 5.0  # a hub's copy at most this far behind reads "up to date"
NO_QUORUM = "no majority: acknowledgements and singleton jobs wait until more hubs are up"


def lag_text(lag: Any) -> str:
    """How far a hub's copy of the readings is behind: `up to date` below 5 s, else `copy behind by N s`."""
    if not isinstance(lag, (int, float)) or isinstance(lag, bool):
        return "not measured yet"
    return "up to date" if lag < LAG_OK_S else f"copy behind by {lag:.0f} s"


def hubs_view(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """The Hubs panel from GET /api/cluster's body; None for a single hub (no panel)."""
    members = cluster.get("members") or []
    if len(members) <= 1:
        return None
    leader = cluster.get("leader")
    rows = [{"name": m["name"], "address": m.get("address") or "", "self": m["name"] == cluster.get("self"),
             "role": m.get("role") or "unknown", "online": bool(m.get("online")),
             "state": "online" if m.get("online") else "down", "error": m.get("error") or "",
             "lag": lag_text(m.get("lag_s")), "key": f"cluster/{m['name']}/lag"} for m in members]
    return {"hubs": rows, "has_quorum": bool(cluster.get("has_quorum")), "warning": "" if cluster.get("has_quorum")
            else NO_QUORUM, "heading": f"{'leader ' + leader if leader else 'no leader'} · term {cluster.get('term', 0)}"}


def hubs_signature(hubs: dict[str, Any] | None) -> str:
    """Changes when a hub joins, leaves, goes down or comes back, the leader or term changes, or the
    majority is lost or regained; empty for a single hub. (The lag updates in place, by its data-key.)"""
    if hubs is None:
        return ""
    key = [[(h["name"], h["role"], h["state"], h["error"]) for h in hubs["hubs"]], hubs["heading"], hubs["warning"]]
    return digest(key)


EXPORT_STATES = {  # state -> (words, CSS class, what it means)
    "ok": ("sending", "ok", "the engine takes the readings"),
    "standby": ("standby", "standby", "another hub leads the group and sends the readings"),
    "retrying": ("retrying", "warn", "the engine does not take readings now; they wait in the hub and go out "
                 "when it does"),
    "stopped": ("stopped", "bad", "the engine refused the readings; fix the target's settings or the engine, "
                "then restart the hub (the readings wait in the hub meanwhile)"),
}


def count_text(n: int) -> str:
    """A count with thin thousands groups: `12 345`."""
    return f"{n:,}".replace(",", " ")


def wait_text(seconds: float) -> str:
    """How long something has waited: `65 s`, `12 min`, `3 h`, `2 d`."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


def clock_text(ts: float) -> str:
    """A moment as the hub's local time of day, `14:03:12`."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def export_row(status: dict[str, Any]) -> dict[str, Any]:
    """One export target as the Exports panel shows it (from its Exporter.status())."""
    name, state = status["name"], status.get("state") or "unknown"
    words, cls, meaning = EXPORT_STATES.get(state, (state, "unknown", ""))
    backlog = status.get("backlog") or 0
    waiting = (f"{count_text(backlog)} behind (oldest {wait_text(status.get('behind_s') or 0.0)})" if backlog
               else "up to date")
    lost = status.get("lost") or 0
    lost_text = f"{count_text(lost)} reading{'' if lost == 1 else 's'} deleted before they were sent" if lost else ""
    error = status.get("last_error") or ""
    if error and status.get("error_since"):
        error = f"{error} (since {clock_text(status['error_since'])})"
    key = f"export:{name}"
    return {"name": name, "url": status.get("url") or "", "state": state, "state_text": words, "state_cls": cls,
            "state_title": meaning, "sent": count_text(status.get("sent") or 0), "waiting": waiting,
            "lost": lost_text, "error": error, "key": key}


def exports_view(statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Exports panel from GET /api/exports' list; None when the hub exports nowhere (no panel)."""
    if not statuses:
        return None
    rows = [export_row(s) for s in statuses]
    states = [r["state"] for r in rows]
    n = len(rows)
    trouble = [f"{states.count(s)} {s}" for s in ("stopped", "retrying") if s in states]
    if trouble:
        summary = " · ".join(trouble)
    elif all(s == "standby" for s in states):
        summary = "another hub sends"
    else:
        summary = "all sending" if n > 1 else "sending"
    return {"targets": rows, "heading": f"{n} target{'' if n == 1 else 's'} · {summary}"}


def exports_values(exports: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The Exports panel's live values, by data-key: everything but the list of targets updates in place."""
    if exports is None:
        return {}
    out: dict[str, dict[str, Any]] = {"exports/heading": {"text": exports["heading"]}}
    for r in exports["targets"]:
        k = r["key"]
        out[f"{k}/state"] = {"text": r["state_text"], "cls": f"export-state {r['state_cls']}", "title": r["state_title"]}
        out[f"{k}/sent"] = {"text": r["sent"]}
        out[f"{k}/waiting"] = {"text": r["waiting"]}
        out[f"{k}/lost"] = {"text": r["lost"], "hidden": not r["lost"]}
        out[f"{k}/error"] = {"text": r["error"], "hidden": not r["error"]}
    return out


def exports_signature(exports: dict[str, Any] | None) -> str:
    """Changes when the targets change (a hub restarted with other [[export]] settings); empty without any.
    (State, counts, losses and errors update in place, by their data-keys.)"""
    if exports is None:
        return ""
    key = [(r["name"], r["url"]) for r in exports["targets"]]
    return digest(key)


NOTIFY_STATES = {  # state -> (words, CSS class, what it means)
    "ok": ("sending", "ok", "messages go out"),
    "quiet": ("quiet hours", "quiet", "quiet hours: non-critical messages wait and go out as one digest when they "
              "end (critical ones go out now)"),
    "retrying": ("retrying", "warn", "the channel does not take messages now; they wait in the hub's store and go "
                 "out, in order, when it does"),
    "failing": ("failing", "bad", "the channel refused the last message for good (it was dropped); fix the "
                "channel's settings; the next message tries again"),
}


def notify_state(status: dict[str, Any]) -> str:
    """ok / quiet / retrying / failing for a channel's Notifier.status() entry.

    An error with messages waiting is being retried (a refused message is dropped, so what waits
    is retried); an error with nothing waiting was a refusal for good, shown until a message goes through."""
    if status.get("last_error"):
        return "retrying" if status.get("waiting") else "failing"
    return "quiet" if status.get("quiet") else "ok"


def notify_row(status: dict[str, Any]) -> dict[str, Any]:
    """One notification channel as the Notifications panel shows it (from its Notifier.status() entry)."""
    name, state = status["name"], notify_state(status)
    words, cls, meaning = NOTIFY_STATES[state]
    last_sent = status.get("last_sent")
    if state == "ok":
        meaning += f"; last one at {clock_text(last_sent)}" if last_sent else "; none sent since the hub started"
    error = status.get("last_error") or ""
    if error and status.get("error_since"):
        error = f"{error} (since {clock_text(status['error_since'])})"
    suppressed, failed = status.get("suppressed") or 0, status.get("failed") or 0
    return {"name": name, "kind": status.get("kind") or "", "state": state, "state_text": words, "state_cls": cls,
            "state_title": meaning, "sent": count_text(status.get("sent") or 0),
            "waiting": count_text(status.get("waiting") or 0),
            "suppressed": f"{count_text(suppressed)} suppressed by the rate cap" if suppressed else "",
            "failed": f"{count_text(failed)} failed for good" if failed else "", "error": error,
            "key": f"notify:{name}"}


def notify_view(statuses: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Notifications panel from GET /api/notify's list; None without [[notify]] channels (no panel)."""
    if not statuses:
        return None
    rows = [notify_row(s) for s in statuses]
    states = [r["state"] for r in rows]
    n = len(rows)
    parts = [f"{states.count(s)} {s}" for s in ("failing", "retrying") if s in states]
    if "quiet" in states:
        parts.append("quiet hours" if n == 1 else f"{states.count('quiet')} in quiet hours")
    summary = " · ".join(parts) if parts else "all sending" if n > 1 else "sending"
    return {"channels": rows, "heading": f"{n} channel{'' if n == 1 else 's'} · {summary}"}


def notify_values(notify: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The Notifications panel's live values, by data-key: everything but the list of channels updates in place."""
    if notify is None:
        return {}
    out: dict[str, dict[str, Any]] = {"notify/heading": {"text": notify["heading"]}}
    for r in notify["channels"]:
        k = r["key"]
        out[f"{k}/state"] = {"text": r["state_text"], "cls": f"notify-state {r['state_cls']}", "title": r["state_title"]}
        out[f"{k}/error"] = {"text": r["error"], "hidden": not r["error"]}
        out[f"{k}/sent"] = {"text": r["sent"]}
        out[f"{k}/waiting"] = {"text": r["waiting"]}
        out[f"{k}/suppressed"] = {"text": r["suppressed"], "hidden": not r["suppressed"]}
        out[f"{k}/failed"] = {"text": r["failed"], "hidden": not r["failed"]}
    return out


def notify_signature(notify: dict[str, Any] | None) -> str:
    """Changes when the channels change (a hub restarted with other [[notify]] settings); empty without any.
    (State, counts and errors update in place, by their data-keys; a test's outcome stays put.)"""
    if notify is None:
        return ""
    key = [(r["name"], r["kind"]) for r in notify["channels"]]
    return digest(key)
