"""The fleet in Home Assistant, by MQTT discovery: the hub publishes for every node.

Spokes have no MQTT client (a Pi Zero pays nothing); the hub speaks for the fleet with
paho-mqtt's client on its own network thread. Per node, one Home Assistant device:

- a `sensor` per (sensor, quantity), with the quantity's device class, unit and
  `state_class: measurement`; `expire_after` the sensor's stale limit, so a value that stops
  coming shows unavailable rather than frozen;
- a `light` per LED of its strip (JSON schema, rgb, brightness), a `siren` and a `button` (one
  beep) for its buzzer, a `button` acknowledging its active alerts, and a `sensor` counting them.

Availability: every entity needs the bridge (`<base>/bridge/status`, the hub's last will says
`offline`; with several hubs only the Raft leader connects and publishes) and its node (`<base>/<node>/availability`, from the hub's liveness view). A node
that goes away shows unavailable; its entities are never removed by the hub: a board rebooting
or unplugged for a week keeps its Home Assistant history, names and dashboards. Delete a device
in Home Assistant to remove it.

Discovery configs, states and availability are retained, and all of them are published again
when the broker connection comes back and when Home Assistant announces itself `online` on
`<prefix>/status`. Readings history stays in the hub's store, not in the broker.

Commands (lights, siren, buttons) go through the checks the dashboard's operator controls use
(actors.devices.commands) and then to the node's actors, whose own checks (the buzzer's mute)
hold. A malformed payload is logged once per topic and minute and ignored."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import selectors
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from actors.devices.commands import buzzer_call, leds_call
from actors.errors import BadRequest
from actors.hub.state import Hub
from actors.hub.store import Row
from actors.hub.views import limit_for
from actors.node.config import MqttConfig
from hal.names import object_name

log = logging.getLogger(__name__)
TICK_S = 1.0  # availability, new entities and alert counts are looked at this often
LED_REFRESH_S = 30.0  # a strip's pixels are asked for this often (a plugin may have set them)
OUT_QUEUE = 20_000  # messages waiting for the broker (about 200 spokes' worth of a second or two)
COMMAND_QUEUE = 100  # commands waiting for the worker; beyond it they are dropped with a log line
COMMAND_TIMEOUT_S = 5.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 60.0  # the broker retried with backoff
NETWORK_POLL_S = 1.0  # the network loop's wait: keepalive is looked at this often
MANUFACTURER = "Harvester"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
Caller = Callable[[str, str, str, tuple[Any, ...]], Any]  # (node, actor, method, args) -> result


def safe(text: str) -> str:
    """A topic level / object id: Home Assistant allows [A-Za-z0-9_-] there."""
    return _UNSAFE.sub("_", text)


def default_caller(ns_host: str, ns_port: int) -> Caller:
    """Calls to node actors through the name server, one cached handle per actor (one worker thread)."""
    from actors.client import ActorHandle

    handles: dict[str, ActorHandle] = {}

    def call(node: str, actor: str, method: str, args: tuple[Any, ...]) -> Any:
        name = object_name(node, actor)
        handle = handles.get(name)
        if handle is None:
            handle = handles[name] = ActorHandle(name, ns_host, ns_port, timeout=COMMAND_TIMEOUT_S, retries=0)
        return handle.call(method, *args)
    return call


class MqttBridge:
    """Publishes the hub's view to a broker and takes Home Assistant's commands back."""

    def __init__(self, cfg: MqttConfig, hub: Hub, hub_name: str, call: Caller, dashboard_url: str | None = None,
                 client: Any = None, leads: Callable[[], bool] = lambda: True) -> None:
        self.cfg = cfg
        self.hub = hub
        self.hub_name = hub_name
        self.call = call
        self.dashboard_url = dashboard_url
        self.base, self.prefix = cfg.base_topic, cfg.discovery_prefix
        # one bridge for the fleet: with several hubs only the leader connects (below), under one will
        self.status_topic = f"{self.base}/bridge/status"
        self.leads = leads
        self._linked = False  # connect_async done and the network loop running (while this hub leads)
        self._net_stop = threading.Event()
        self._net: threading.Thread | None = None
        self.client = client or self._client()
        self._pending: queue.SimpleQueue[tuple[str, list[Row]]] = queue.SimpleQueue()
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(COMMAND_QUEUE)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._announced: dict[str, str] = {}  # discovery topic -> payload published
        self._shapes: dict[str, Any] = {}  # node -> what its configs were last built from
        self._availability: dict[str, str] = {}  # node -> "online" / "offline" published
        self._alert_counts: dict[str, int] = {}
        self._leds: dict[str, int] = {}  # node -> strip length
        self._pixels: dict[str, list[list[int]]] = {}  # node -> pixels last published
        self._pixels_due: dict[str, float] = {}
        self._refresh = threading.Event()  # everything again: a (re)connect, or Home Assistant came online
        self._complaints: dict[str, float] = {}
        self.connected = False
        self.published = 0
        self.commands_done = 0
        self.commands_refused = 0
        self._threads: list[threading.Thread] = []

    # -- the client ------------------------------------------------------------------------
    def _client(self) -> Any:
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"harvester-{self.hub_name}",
                             protocol=mqtt.MQTTv311)
        if cfg.username:
            assert cfg.password_file is not None
            client.username_pw_set(cfg.username, cfg.password_file.read_text().strip())
        if cfg.tls:
            client.tls_set(ca_certs=str(cfg.ca) if cfg.ca else None)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        # A slow broker must not grow the hub: beyond this many waiting messages paho drops new
        # ones. Each is a latest value or a config, published again on the next change or reconnect.
        client.max_queued_messages_set(OUT_QUEUE)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def start(self) -> MqttBridge:
        """Connect in the background (a broker that is down is retried with backoff) and start publishing."""
        self.hub.listeners.append(self._took)
        self._link()
        for target, name in ((self._publish_loop, "mqtt-publish"), (self._command_loop, "mqtt-commands")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Say offline, disconnect, stop the threads."""
        self._stop.set()
        self._wake.set()
        if self._took in self.hub.listeners:
            self.hub.listeners.remove(self._took)
        self._unlink(say_offline=True)
        for t in self._threads:
            t.join(5.0)

    def _link(self) -> None:
        """Connect while this hub leads the fleet (always, with one hub)."""
        if not self._linked and self.leads():
            self._linked = True
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
            self._net_stop = threading.Event()
            self._net = threading.Thread(target=self._network_loop, args=(self._net_stop,), name="mqtt-network",
                                         daemon=True)
            self._net.start()
        elif self._linked and not self.leads():
            log.info("MQTT: this hub no longer leads; the leader publishes the fleet now")
            self._unlink(say_offline=False)  # the new leader says online; an offline here would race it

    def _unlink(self, say_offline: bool) -> None:
        if not self._linked:
            return
        was = self.connected
        self.connected = False  # a disconnect of our own asking: nothing to warn about
        if was and say_offline:
            self.client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(2.0)
        self._net_stop.set()
        self.client.disconnect()
        if self._net is not None and self._net is not threading.current_thread():
            self._net.join(5.0)
        self._linked = False

    def _network_loop(self, stop: threading.Event) -> None:
        """paho's network loop, on an epoll selector: paho's own (loop_start) waits in select(),
        which cannot watch a descriptor above 1023, and a hub holding a connection per spoke
        gives a broker reconnect such a descriptor. Reconnects back off from 1 s to 60 s.
        Publishes from other threads write at once (paho does when no loop thread of its own runs)."""
        sel = selectors.DefaultSelector()
        delay = RECONNECT_MIN_S
        try:
            while not stop.is_set():
                sock = self.client.socket()
                if sock is None:
                    try:
                        self.client.reconnect()
                        delay = RECONNECT_MIN_S
                    except (OSError, ValueError) as exc:
                        self._complain("connect", f"cannot reach the broker at {self.cfg.host}:{self.cfg.port}: "
                                                  f"{type(exc).__name__}: {exc}; retrying in {delay:.0f} s")
                        stop.wait(delay)
                        delay = min(RECONNECT_MAX_S, delay * 2)
                    continue
                rc = mqtt.MQTT_ERR_SUCCESS
                if getattr(sock, "pending", lambda: 0)():  # TLS bytes already decrypted: no event will come
                    rc = self.client.loop_read()
                else:
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.client.want_write() else 0)
                    try:
                        sel.register(sock, events)
                        ready = sel.select(NETWORK_POLL_S)
                    except (OSError, ValueError):  # closed under us: the next round reconnects
                        ready = []
                    finally:
                        with contextlib.suppress(KeyError, ValueError, OSError):
                            sel.unregister(sock)
                    for _, mask in ready:
                        if mask & selectors.EVENT_READ:
                            rc = self.client.loop_read()
                        if rc == mqtt.MQTT_ERR_SUCCESS and mask & selectors.EVENT_WRITE:
                            rc = self.client.loop_write()
                if rc == mqtt.MQTT_ERR_SUCCESS:
                    self.client.loop_misc()  # keepalive pings, and a broker that stopped answering
                elif self.client.socket() is None:
                    stop.wait(delay)  # lost: wait before reconnecting, as paho's own loop does
                    delay = min(RECONNECT_MAX_S, delay * 2)
        finally:
            sel.close()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._complain("connect", f"the broker refused the connection: {reason}")
            return
        log.info("MQTT: connected to %s:%d", self.cfg.host, self.cfg.port)
        self.connected = True
        client.publish(self.status_topic, "online", qos=1, retain=True)
        client.subscribe([(f"{self.prefix}/status", 1), (f"{self.base}/+/leds/+/set", 1),
                          (f"{self.base}/+/buzzer/set", 1), (f"{self.base}/+/buzzer/beep", 1),
                          (f"{self.base}/+/alerts/ack", 1)])
        self._refresh.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.connected:
            log.warning("MQTT: disconnected from %s:%d (%s); reconnecting with backoff, the hub carries on",
                        self.cfg.host, self.cfg.port, reason)
        self.connected = False

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """On paho's network thread: only hand over (the actors may take seconds to answer)."""
        if message.topic == f"{self.prefix}/status":
            if message.payload == b"online":
                self._refresh.set()
                self._wake.set()
            return
        try:
            self._commands.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self._complain("queue", f"commands arrive faster than the nodes take them; dropped one on "
                                     f"{message.topic}")

    def _publish(self, topic: str, payload: str, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)
        self.published += 1

    def _complain(self, key: str, text: str) -> None:
        """A warning once a minute per key (a storm of bad payloads must not flood the log)."""
        now = time.monotonic()
        if now - self._complaints.get(key, -120.0) >= 60.0:
            self._complaints[key] = now
            log.warning("MQTT: %s", text)

    # -- states ----------------------------------------------------------------------------
    def _took(self, node: str, rows: list[Row]) -> None:
        """Hub listener (under the hub's lock): note the rows, wake the publisher."""
        self._pending.put((node, rows))
        self._wake.set()

    def state_topic(self, node: str, sensor: str, quantity: str) -> str:
        return f"{self.base}/{safe(node)}/{safe(sensor)}/{safe(quantity)}"

    def _publish_rows(self, node: str, rows: list[Row]) -> None:
        latest: dict[tuple[str, str], Row] = {}
        for row in rows:
            key = (row.sensor, row.quantity)
            if key not in latest or row.ts >= latest[key].ts:
                latest[key] = row
        for (sensor, quantity), row in latest.items():
            value = "None" if row.value is None else repr(float(row.value))  # "None": Home Assistant's unknown
            self._publish(self.state_topic(node, sensor, quantity), value)

    def _publish_loop(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            self._link()
            if not self.connected:
                continue
            try:
                if self._refresh.is_set():
                    self._refresh.clear()
                    self._everything()
                while True:
                    try:
                        node, rows = self._pending.get_nowait()
                    except queue.Empty:
                        break
                    self._publish_rows(node, rows)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self._tick()
            except Exception:  # noqa: BLE001 (the publisher must outlive any one bad moment)
                log.exception("MQTT: publishing failed; trying again")

    def _everything(self) -> None:
        """A fresh connection or Home Assistant restarted: every config, availability and state again."""
        with self._lock:
            self._announced.clear()
            self._shapes.clear()
            self._availability.clear()
            self._alert_counts.clear()
            self._pixels.clear()
            self._pixels_due.clear()
        self._tick()
        for node in self.hub.snapshot()["nodes"]:
            rows = [Row(sensor, quantity, r["value"], r["unit"], r["ts"], r["quality"], r.get("reason"))
                    for sensor, qs in node["sensors"].items() for quantity, r in qs.items()]
            self._publish_rows(node["name"], rows)

    def _tick(self) -> None:
        """New entities announced, availability and alert counts published where they changed."""
        snapshot = self.hub.snapshot()["nodes"]
        counts: dict[str, int] = {}
        for alert in self.hub.alerts(active_only=True):
            if not alert.get("acknowledged"):
                counts[alert["raised_by"]] = counts.get(alert["raised_by"], 0) + 1
        for node in snapshot:
            name = node["name"]
            # a node's configs change only with its shape: skip building them (JSON for every
            # entity of every node) on the ticks where it did not change
            shape = (tuple(sorted((s, q, r.get("unit")) for s, qs in node["sensors"].items() for q, r in qs.items())),
                     tuple(sorted(node.get("actors") or {})), node["role"], node.get("profile"),
                     json.dumps(self.hub.node_infos({name}).get(name, {}), sort_keys=True, default=str),
                     self._leds.get(name))
            if self._shapes.get(name) != shape:
                fresh = self.discovery(node)
                for topic, payload in fresh.items():
                    if self._announced.get(topic) != payload:
                        self._publish(topic, payload)
                        self._announced[topic] = payload
                if "leds" not in (node.get("actors") or {}) or name in self._leds:
                    self._shapes[name] = shape  # a strip's length still unknown: look again next tick
            online = "online" if node["online"] else "offline"
            if self._availability.get(name) != online:
                self._publish(f"{self.base}/{safe(name)}/availability", online)
                self._availability[name] = online
            if self._alert_counts.get(name) != counts.get(name, 0):
                self._publish(f"{self.base}/{safe(name)}/alerts/count", str(counts.get(name, 0)))
                self._alert_counts[name] = counts.get(name, 0)
            if node["online"] and "leds" in (node.get("actors") or {}) and \
                    time.monotonic() >= self._pixels_due.get(name, 0.0):
                self._refresh_pixels(name)

    def _refresh_pixels(self, node: str) -> None:
        """Each LED's state, where it changed (commands publish their own at once)."""
        self._pixels_due[node] = time.monotonic() + LED_REFRESH_S
        try:
            pixels = self.call(node, "leds", "state", ())["pixels"]
        except Exception as exc:  # noqa: BLE001 (asked again at the next refresh)
            self._complain(f"pixels:{node}", f"{node}'s LED strip did not answer: {exc}")
            return
        with self._lock:
            self._leds[node] = len(pixels)
            old = self._pixels.get(node, [])
            self._pixels[node] = [list(p) for p in pixels]
        for i, rgb in enumerate(pixels):
            if i >= len(old) or old[i] != rgb:
                self._publish_light(node, i, rgb)

    # -- discovery ---------------------------------------------------------------------------
    def _device(self, node: dict[str, Any]) -> dict[str, Any]:
        info = self.hub.node_infos({node["name"]}).get(node["name"], {}).get("info", {})
        device: dict[str, Any] = {"identifiers": [f"harvester_{safe(node['name'])}"], "name": node["name"],
                                  "manufacturer": MANUFACTURER,
                                  "model": f"Harvester {node['role']} ({node.get('profile', 'wasm')})"}
        if info.get("version"):
            device["sw_version"] = str(info["version"])
        if node["role"] != "hub":
            device["via_device"] = f"harvester_{safe(self.hub_name)}"
        if self.dashboard_url:
            device["configuration_url"] = self.dashboard_url
        return device

    def _availability_list(self, node: str) -> list[dict[str, str]]:
        return [{"topic": self.status_topic}, {"topic": f"{self.base}/{safe(node)}/availability"}]

    def discovery(self, node: dict[str, Any]) -> dict[str, str]:
        """Every discovery config of one node's device: topic -> JSON payload."""
        name, device = node["name"], self._device(node)
        common = {"device": device, "availability": self._availability_list(name), "availability_mode": "all"}
        out: dict[str, dict[str, Any]] = {}
        stale = (self.hub.node_infos({name}).get(name, {}).get("info", {}) or {}).get("stale_after") or {}
        if not isinstance(stale, dict):
            stale = {}
        for sensor, quantities in node["sensors"].items():
            for quantity, r in quantities.items():
                oid = f"{safe(sensor)}_{safe(quantity)}"
                known = self.hub.quantities.lookup(quantity, name)
                config: dict[str, Any] = {
                    "name": f"{sensor} {quantity.replace('_', ' ')}", "unique_id": f"harvester_{safe(name)}_{oid}",
                    "object_id": f"{safe(name)}_{oid}", "state_topic": self.state_topic(name, sensor, quantity),
                    "state_class": "measurement", **common}
                if r.get("unit"):
                    config["unit_of_measurement"] = r["unit"]
                if known is not None and known.device_class:
                    config["device_class"] = known.device_class
                limit = limit_for(stale, sensor, 0.0)  # the rule the hub's own stale flags follow
                if limit > 0:
                    config["expire_after"] = max(1, round(limit))
                out[f"{self.prefix}/sensor/{safe(name)}/{oid}/config"] = config
        actors = node.get("actors") or {}
        base = f"{self.base}/{safe(name)}"
        uid = f"harvester_{safe(name)}"
        for i in range(self._strip_length(name) if "leds" in actors else 0):
            out[f"{self.prefix}/light/{safe(name)}/led_{i}/config"] = {
                "name": f"LED {i}", "unique_id": f"{uid}_led_{i}", "object_id": f"{safe(name)}_led_{i}",
                "schema": "json", "command_topic": f"{base}/leds/{i}/set", "state_topic": f"{base}/leds/{i}/state",
                "supported_color_modes": ["rgb"], "brightness": True, "brightness_scale": 255, **common}
        if "buzzer" in actors:
            out[f"{self.prefix}/siren/{safe(name)}/buzzer/config"] = {
                "name": "Buzzer", "unique_id": f"{uid}_buzzer", "object_id": f"{safe(name)}_buzzer",
                "command_topic": f"{base}/buzzer/set", "support_duration": True, "support_volume_set": False,
                "optimistic": True, **common}
            out[f"{self.prefix}/button/{safe(name)}/beep/config"] = {
                "name": "Beep", "unique_id": f"{uid}_beep", "object_id": f"{safe(name)}_beep",
                "command_topic": f"{base}/buzzer/beep", "payload_press": "PRESS", **common}
        out[f"{self.prefix}/button/{safe(name)}/ack_alerts/config"] = {
            "name": "Acknowledge alerts", "unique_id": f"{uid}_ack_alerts", "object_id": f"{safe(name)}_ack_alerts",
            "command_topic": f"{base}/alerts/ack", "payload_press": "PRESS", **common}
        out[f"{self.prefix}/sensor/{safe(name)}/active_alerts/config"] = {
            "name": "Active alerts", "unique_id": f"{uid}_active_alerts", "object_id": f"{safe(name)}_active_alerts",
            "state_topic": f"{base}/alerts/count", "state_class": "measurement", **common}
        return {topic: json.dumps(config, sort_keys=True, ensure_ascii=False) for topic, config in out.items()}

    def _strip_length(self, node: str) -> int:
        """How many LEDs the node's strip has (asked once; 0 while its actor does not answer)."""
        length = self._leds.get(node)
        if length is None:
            try:
                length = len(self.call(node, "leds", "state", ())["pixels"])
            except Exception as exc:  # noqa: BLE001 (a node not answering yet: ask again next tick)
                self._complain(f"leds:{node}", f"{node}'s LED strip does not answer yet ({exc}); its lights come later")
                return 0
            with self._lock:
                self._leds[node] = length
        return length

    # -- commands ----------------------------------------------------------------------------
    def _command_loop(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            # one complaint a minute per node (or for all unknown ones): the sender picks the topic
            node = self._node_of(topic)
            key = node if node is not None else "?"
            try:
                self.command(topic, payload)
                self.commands_done += 1
            except BadRequest as exc:
                self.commands_refused += 1
                self._complain(f"bad:{key}", f"ignored a command on {topic[:120]}: {exc}")
            except Exception as exc:  # noqa: BLE001 (a node down or refusing: say so, carry on)
                self.commands_refused += 1
                self._complain(f"failed:{key}", f"a command on {topic[:120]} failed: {type(exc).__name__}: {exc}")

    def _node_of(self, topic: str) -> str | None:
        rest = topic.split("/")[self.base.count("/") + 1:]
        return next((n for n in self.hub.node_names() if safe(n) == rest[0]), None) if rest else None

    def command(self, topic: str, payload: bytes) -> None:
        """Carry out one command from Home Assistant; BadRequest when it makes no sense."""
        rest = topic.split("/")[self.base.count("/") + 1:]
        node = self._node_of(topic)
        if node is None:
            raise BadRequest(f"no node {(rest[0] if rest else '?')[:40]!r} at this hub")
        what = rest[1:]
        has = self._actors(node)
        if what[:1] == ["leds"] and "leds" not in has or what[:1] == ["buzzer"] and "buzzer" not in has:
            raise BadRequest(f"{node} has no {what[0]} (its actors: {', '.join(sorted(has)) or 'none known'})")
        if what[:1] == ["leds"] and len(what) == 3 and what[2] == "set":
            self._light(node, what[1], payload)
        elif what == ["buzzer", "set"]:
            self._siren(node, payload)
        elif what == ["buzzer", "beep"]:
            if payload.strip() != b"PRESS":
                raise BadRequest(f"a beep button sends PRESS, got {payload[:40]!r}")
            method, args = buzzer_call({"action": "beep"})
            self.call(node, "buzzer", method, args)
        elif what == ["alerts", "ack"]:
            if payload.strip() != b"PRESS":
                raise BadRequest(f"an acknowledge button sends PRESS, got {payload[:40]!r}")
            self._acknowledge(node)
        else:
            raise BadRequest(f"no command at {topic}")

    def _actors(self, node: str) -> set[str]:
        """The node's actors as the hub's probe last saw them."""
        for view in self.hub.snapshot()["nodes"]:
            if view["name"] == node:
                return set(view.get("actors") or {})
        return set()

    def _light(self, node: str, index_text: str, payload: bytes) -> None:
        if not re.fullmatch(r"[0-9]{1,4}", index_text):
            raise BadRequest(f"LED index must be a number, got {index_text[:20]!r}")
        index = int(index_text)
        body = _json(payload, "a light command")
        if not isinstance(body, dict) or body.get("state") not in ("ON", "OFF"):
            raise BadRequest(f"a light command has \"state\": \"ON\" or \"OFF\", got {str(body)[:80]}")
        if body["state"] == "OFF":
            rgb = [0, 0, 0]
        else:
            # Home Assistant's brightness slider sends no colour: keep the LED's own, at full scale
            with self._lock:
                now = list(self._pixels.get(node, [])[index]) if index < len(self._pixels.get(node, [])) else None
            top = max(now) if now else 0
            own = {k: round(c * 255 / top) for k, c in zip("rgb", now, strict=True)} if now and top else None
            colour = body.get("color", own or {"r": 255, "g": 255, "b": 255})
            if not isinstance(colour, dict):
                raise BadRequest(f"\"color\" must be {{\"r\", \"g\", \"b\"}}, got {str(colour)[:60]}")
            rgb = [colour.get(k) for k in ("r", "g", "b")]
            brightness = body.get("brightness", 255)
            if isinstance(brightness, bool) or not isinstance(brightness, int) or not 0 <= brightness <= 255:
                raise BadRequest(f"\"brightness\" must be an integer 0..255, got {str(brightness)[:20]}")
            method, args = leds_call({"action": "set_pixel", "index": index, "rgb": rgb})  # checks the colour
            rgb = [round(c * brightness / 255) for c in rgb]
        method, args = leds_call({"action": "set_pixel", "index": index, "rgb": rgb})
        length = self._leds.get(node)
        if length is not None and index >= length:
            raise BadRequest(f"{node}'s strip has {length} LEDs; there is no LED {index}")
        state = self.call(node, "leds", method, args)
        self._publish_light(node, index, state["pixels"][index])
        with self._lock:
            self._pixels[node] = [list(p) for p in state["pixels"]]
            self._leds[node] = len(state["pixels"])

    def _publish_light(self, node: str, index: int, rgb: list[int]) -> None:
        top = max(rgb)
        if top == 0:
            state: dict[str, Any] = {"state": "OFF"}
        else:  # the colour at full scale, and how bright: what Home Assistant sent, as far as 8 bits tell
            state = {"state": "ON", "color_mode": "rgb", "brightness": top,
                     "color": {k: round(c * 255 / top) for k, c in zip("rgb", rgb, strict=True)}}
        self._publish(f"{self.base}/{safe(node)}/leds/{index}/state", json.dumps(state))

    def _siren(self, node: str, payload: bytes) -> None:
        text = payload.strip()
        body: Any = text.decode("utf-8", "replace")
        if text.startswith(b"{"):
            body = _json(text, "a siren command")
        if isinstance(body, dict):
            state, duration = body.get("state"), body.get("duration")
        else:
            state, duration = body, None
        if state not in ("ON", "OFF"):
            raise BadRequest(f"a siren command turns it ON or OFF, got {str(state)[:40]!r}")
        if state == "OFF":
            method, args = buzzer_call({"action": "off"})
        elif duration is None:
            method, args = buzzer_call({"action": "on"})
        else:
            if isinstance(duration, bool) or not isinstance(duration, int | float) or not 0 < duration <= 5:
                raise BadRequest(f"\"duration\" must be seconds in (0, 5], got {str(duration)[:20]}")
            method, args = buzzer_call({"action": "beep", "count": 1, "duration_ms": max(10, round(duration * 1000))})
        self.call(node, "buzzer", method, args)

    def _acknowledge(self, node: str) -> None:
        """Every active, unacknowledged alert the node raised, acknowledged as the dashboard does it."""
        for alert in self.hub.alerts(active_only=True):
            if alert["raised_by"] != node or alert.get("acknowledged"):
                continue
            done = self.hub.acknowledge(alert["id"], by="home assistant")
            if done is None:
                continue
            for actor, method, args in (("plugins", "acknowledge", (alert["alert"], alert["plugin"])),
                                        ("buzzer", "silence", ())):
                try:
                    self.call(node, actor, method, args)
                except Exception as exc:  # noqa: BLE001 (acknowledged at the hub; the node hears later)
                    log.info("alert %s acknowledged at the hub only: %s", alert["id"], exc)
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """For the bench and the tests."""
        return {"connected": self.connected, "published": self.published, "commands": self.commands_done,
                "refused": self.commands_refused, "entities": len(self._announced)}


def _json(payload: bytes, what: str) -> Any:
    """A command's JSON body; BadRequest when it is not JSON (or nested past the parser's depth)."""
    if len(payload) > 4096:
        raise BadRequest(f"{what} is at most 4096 bytes, got {len(payload)}")
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest(f"{what} is JSON, got {payload[:60]!r}") from None
