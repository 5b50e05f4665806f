"""GET /metrics: the fleet in the Prometheus text format 0.0.4, node_exporter style.

Names carry base units: celsius, pascals, ohms, bytes, seconds, and ratios (0..1) for
every percentage — never percent — so a share reads the same whatever its source. The
IAQ index keeps its own 0..500 scale. Readings are labelled {node, sensor}; a reading
whose sensor gave no value is left out (harvester_reading_available says so). With several
hubs, harvester_cluster_* describe the hubs' group as this hub sees it, labelled {hub}. With
[[export]] targets, harvester_export_* describe each time-series engine's feed, labelled {target}. With
[[notify]] channels, harvester_notify_* describe each notification channel, labelled {channel, kind}."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import bottle

from web.context import WebContext
from web.http import ApiError, error_response
from web.polling import StatePoller

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1024 * 1024  # the monitor's "MB" are /proc/meminfo kB / 1024

# quantity -> (metric, factor to the base unit, help)
READING_METRICS: dict[str, tuple[str, float, str]] = {
    "temperature": ("harvester_temperature_celsius", 1, "Air temperature."),
    "humidity": ("harvester_relative_humidity_ratio", 0.01, "Relative humidity (0..1)."),
    "pressure": ("harvester_pressure_pascals", 100, "Barometric pressure."),
    "gas_resistance": ("harvester_gas_resistance_ohms", 1, "MOX gas sensor resistance (BME680)."),
    "iaq": ("harvester_iaq", 1, "Indoor air quality index, 0 (best) to 500 (worst)."),
    "cpu_temperature": ("harvester_cpu_temperature_celsius", 1, "SoC temperature."),
    "cpu_load": ("harvester_cpu_load_ratio", 0.01, "CPU busy share since the previous read (0..1)."),
    "memory_used": ("harvester_memory_used_bytes", MIB, "Memory in use (total minus available)."),
    "memory_total": ("harvester_memory_total_bytes", MIB, "Physical memory."),
    "memory_percent": ("harvester_memory_used_ratio", 0.01, "Memory in use as a share of total (0..1)."),
    "uptime": ("harvester_uptime_seconds", 1, "Seconds since the node booted."),
    "rtt": ("harvester_network_rtt_seconds", 0.001, "Median round-trip time to a peer, measured by the node."),
    "packet_loss": ("harvester_network_packet_loss_ratio", 0.01, "Share of probes to a peer that got no answer."),
    "co2": ("harvester_co2_ppm", 1, "Carbon dioxide concentration (parts per million)."),
    "illuminance": ("harvester_illuminance_lux", 1, "Illuminance."),
    "soil_moisture": ("harvester_soil_moisture_ratio", 0.01, "Soil moisture between the calibrated dry and wet "
                      "points (0..1)."),
}
PLUGIN_COUNTERS = (("calls", "Plugin evaluations."), ("errors", "Plugin evaluations that failed."),
                   ("timeouts", "Plugin evaluations stopped at their time limit."),
                   ("traps", "WebAssembly traps (the plugin's sandbox was rebuilt)."),
                   ("denied", "Host calls refused by the plugin's manifest."))


class Exposition:
    """Metric families in order, each with HELP, TYPE and its samples (the text format needs them grouped)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_: str, value: float, /, **labels: Any) -> None:
        """One sample of family `name` (created on first use); positional-only, so that any label name
        (`kind`, `name`) can be given."""
        family = self._families.setdefault(name, (kind, help_, []))
        family[2].append(f"{name}{_labels(labels)} {_number(value)}")

    def declare(self, name: str, kind: str, help_: str) -> None:
        """A family that may have no samples yet (so dashboards see the name from the start)."""
        self._families.setdefault(name, (kind, help_, []))

    def render(self) -> str:
        """The text exposition."""
        lines: list[str] = []
        for name, (kind, help_, samples) in self._families.items():
            lines += [f"# HELP {name} {_escape_help(help_)}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _readings(out: Exposition, nodes: Iterable[dict[str, Any]]) -> None:
    for metric, _, help_ in READING_METRICS.values():
        out.declare(metric, "gauge", help_)
    for node in nodes:
        for sensor, quantities in node["sensors"].items():
            for quantity, r in quantities.items():
                labels = {"node": node["name"], "sensor": sensor}
                out.add("harvester_reading_available", "gauge", "1 when the sensor's last reading has a value.",
                        r["value"] is not None, **labels, quantity=quantity)
                out.add("harvester_reading_stale", "gauge", "1 when the last reading is older than its limit.",
                        r["stale"], **labels, quantity=quantity)
                out.add("harvester_reading_timestamp_seconds", "gauge", "When the last reading was measured.",
                        r["ts"], **labels, quantity=quantity)
                if quantity == "iaq":
                    out.add("harvester_iaq_calibrating", "gauge", "1 while the IAQ baseline is burning in.",
                            r["quality"] == "calibrating", **labels)
                if r["value"] is None:
                    continue
                metric, factor, help_ = READING_METRICS.get(
                    quantity, ("harvester_reading", 1, "A reading of a quantity a node declared (its name and "
                               "unit as labels)."))
                extra = {} if quantity in READING_METRICS else {"quantity": quantity, "unit": r["unit"]}
                out.add(metric, "gauge", help_, r["value"] * factor if factor != 1 else r["value"], **labels, **extra)


def _nodes(out: Exposition, nodes: list[dict[str, Any]]) -> None:
    for node in nodes:
        name = node["name"]
        out.add("harvester_node_up", "gauge", "1 when the node pushed recently and answers the hub's probe.",
                node["online"], node=name, role=node["role"], profile=node["profile"])
        if node.get("last_seen") is not None:
            out.add("harvester_node_last_seen_timestamp_seconds", "gauge", "When the hub last heard from the node.",
                    node["last_seen"], node=name)
        if node.get("clock_offset") is not None:
            out.add("harvester_node_clock_offset_seconds", "gauge", "The node's clock minus the hub's.",
                    node["clock_offset"], node=name)
        if isinstance(node.get("clock_synced"), bool):
            out.add("harvester_node_clock_synced", "gauge",
                    "1 when the node's kernel reports its clock synchronised (adjtimex).", int(node["clock_synced"]),
                    node=name)
        if isinstance(node.get("restarts"), int):
            out.add("harvester_node_restarts_total", "counter",
                    "Restarts of the node seen by this hub since it started (a new boot id in its hello).",
                    node["restarts"], node=name)
        for actor, health in sorted((node.get("actors") or {}).items()):
            out.add("harvester_actor_up", "gauge", "1 when the actor's device is available (from the hub's probe).",
                    health.get("state") == "ok", node=name, actor=actor)
        outbox = node.get("outbox")
        if isinstance(outbox, dict):
            if isinstance(outbox.get("pending_batches"), int):
                out.add("harvester_outbox_pending_batches", "gauge", "Batches in the spoke's outbox, not yet at the hub.",
                        outbox["pending_batches"], node=name)
            if isinstance(outbox.get("held_in_memory"), int):
                out.add("harvester_outbox_held_batches", "gauge",
                        "Batches the spoke holds in memory because its disk refused them.",
                        outbox["held_in_memory"], node=name)
            if isinstance(outbox.get("disk_full"), bool):
                out.add("harvester_outbox_disk_full", "gauge",
                        "1 while the spoke's disk refuses writes to its outbox.", int(outbox["disk_full"]), node=name)
            for key, metric, text in (
                    ("held_unsynced", "harvester_outbox_unsynced_batches",
                     "Batches the spoke holds until its clock is synchronised."),
                    ("rejected_batches", "harvester_outbox_rejected_batches",
                     "Batches the hub refused for good, kept aside in the spoke's outbox.")):
                if isinstance(outbox.get(key), int):
                    out.add(metric, "gauge", text, outbox[key], node=name)
            if isinstance(outbox.get("dropped_batches"), int):
                out.add("harvester_outbox_dropped_batches_total", "counter",
                        "Batches the spoke's full outbox dropped (oldest first).", outbox["dropped_batches"], node=name)


def _hub(out: Exposition, ctx: WebContext) -> None:
    hub = ctx.hub
    out.add("harvester_hub_readings_stored_total", "counter", "Readings the hub stored (since it started).",
            hub.readings_stored)
    out.add("harvester_hub_duplicate_batches_total", "counter", "Pushed batches the hub already had (retries).",
            hub.duplicates)
    out.add("harvester_hub_rejected_pushes_total", "counter", "Pushes refused as malformed.", hub.rejected)
    out.add("harvester_hub_unindexed_pushes", "gauge", "Acknowledged pushes not yet moved into the samples file "
            "(grows while the disk is full or the store's indexer is down).", hub.store.unmoved())
    out.add("harvester_hub_indexer_errors_total", "counter", "Failed moves into the samples file and indexer "
            "processes that died, since the hub started.", hub.store.indexer_errors())
    counts: dict[tuple[str, bool], int] = {}
    for a in hub.alerts(active_only=True):
        key = (a["severity"], a["acknowledged"])
        counts[key] = counts.get(key, 0) + 1
    out.declare("harvester_alerts_active", "gauge", "Active alerts by severity and acknowledgement.")
    for severity in ("info", "warning", "critical"):
        for acked in (False, True):
            out.add("harvester_alerts_active", "gauge", "Active alerts by severity and acknowledgement.",
                    counts.get((severity, acked), 0), severity=severity, acknowledged=str(acked).lower())


def _cluster(out: Exposition, ctx: WebContext) -> None:
    """With several hubs only (a single hub exports none of these): the Raft group as this hub sees it."""
    if ctx.hub.cluster is None:
        return
    view = ctx.hub.cluster_view(ctx.node)
    out.add("harvester_cluster_term", "gauge", "The Raft term this hub is in.", view["term"])
    out.add("harvester_cluster_has_quorum", "gauge",
            "1 while this hub reaches a majority of the hubs (acknowledgements and singleton jobs need one).",
            bool(view["has_quorum"]))
    for m in view["members"]:  # one series per hub in each family (Exposition groups them)
        out.add("harvester_cluster_leader", "gauge", "1 for the hub this hub takes as the leader, 0 for the others.",
                view["leader"] is not None and m["name"] == view["leader"], hub=m["name"])
        out.add("harvester_cluster_member_online", "gauge", "1 when the hub answers this one (always 1 for itself).",
                bool(m["online"]), hub=m["name"])
        lag = m.get("lag_s")
        if isinstance(lag, (int, float)) and not isinstance(lag, bool):
            out.add("harvester_cluster_lag_seconds", "gauge",
                    "How far behind the hub's copy of the readings is (age of the oldest batch it lacks).",
                    lag, hub=m["name"])


def _exports(out: Exposition, statuses: list[dict[str, Any]]) -> None:
    """With [[export]] targets only (a hub that exports nowhere has none of these): each target's feed."""
    for s in statuses:  # one series per target in each family (Exposition groups them)
        target = s["name"]
        out.add("harvester_export_sent_total", "counter", "Readings the target's engine took.", s["sent"],
                target=target)
        out.add("harvester_export_backlog", "gauge",
                "Readings stored on the hub and not yet sent to the target (counted up to a million).",
                s["backlog"], target=target)
        out.add("harvester_export_behind_seconds", "gauge",
                "How long ago the oldest reading not yet sent reached the hub (0 when none waits).",
                s["behind_s"], target=target)
        out.add("harvester_export_lost_total", "counter",
                "Readings the hub's retention deleted before they were sent to the target.", s["lost"], target=target)
        out.add("harvester_export_up", "gauge",
                "1 while the target takes readings (or another hub sends them), 0 while retrying or stopped.",
                s["state"] in ("ok", "standby"), target=target)
        out.add("harvester_export_stopped", "gauge",
                "1 when the engine refused the readings for good (the hub sends again after a restart).",
                s["state"] == "stopped", target=target)


def _notify(out: Exposition, statuses: list[dict[str, Any]]) -> None:
    """With [[notify]] channels only (a hub without a notifier has none of these): each channel's messages.
    The counts are since the hub started."""
    for s in statuses:  # one series per channel in each family (Exposition groups them)
        labels = {"channel": s["name"], "kind": s["kind"]}
        out.add("harvester_notify_sent_total", "counter", "Alert messages the channel accepted (since the hub started).",
                s["sent"], **labels)
        out.add("harvester_notify_failed_total", "counter",
                "Alert messages the channel refused for good (dropped; since the hub started).", s["failed"], **labels)
        out.add("harvester_notify_suppressed_total", "counter",
                "Alert messages the rate cap held back (since the hub started; one summary message says so).",
                s["suppressed"], **labels)
        out.add("harvester_notify_waiting", "gauge",
                "Messages queued in the hub's store for the channel (retrying, or held for quiet hours).",
                s["waiting"], **labels)
        out.add("harvester_notify_up", "gauge",
                "1 while the channel takes messages, 0 while its last message failed (retrying or refused).",
                not s["last_error"], **labels)


def _plugins(out: Exposition, polled: dict[str, dict[str, Any]]) -> None:
    for field, help_ in PLUGIN_COUNTERS:
        out.declare(f"harvester_plugin_{field}_total", "counter", help_)
    out.declare("harvester_plugin_up", "gauge", "1 when the plugin is loaded and running (not quarantined/failed).")
    for node, result in sorted(polled.items()):
        if not result["ok"] or not isinstance(result["value"], list):
            continue
        for p in result["value"]:
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                continue
            labels = {"node": node, "plugin": p["name"]}
            for field, help_ in PLUGIN_COUNTERS:
                if isinstance(p.get(field), int):
                    out.add(f"harvester_plugin_{field}_total", "counter", help_, p[field], **labels)
            out.add("harvester_plugin_up", "gauge", "", p.get("state") == "ok", **labels)


def install(app: bottle.Bottle, ctx: WebContext) -> None:
    """Add /metrics to the app."""
    plugins = StatePoller(ctx.upstream, "plugins", "list", ttl=5.0)

    @app.get("/metrics")
    def metrics() -> str:
        try:
            ctx.auth.require_reader()
        except ApiError as exc:
            return error_response(exc)
        nodes = ctx.hub.snapshot()["nodes"]
        out = Exposition()
        _nodes(out, nodes)
        _readings(out, nodes)
        _hub(out, ctx)
        _cluster(out, ctx)
        _exports(out, ctx.dashboard.exports())
        _notify(out, ctx.dashboard.notifications())
        with_plugins = [n["name"] for n in nodes if n["online"] and "plugins" in ctx.dashboard.actors_of(n)]
        _plugins(out, plugins.get(with_plugins) if ctx.upstream.available else {})
        bottle.response.content_type = CONTENT_TYPE
        bottle.response.set_header("Cache-Control", "no-store")
        return out.render()
