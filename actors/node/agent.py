"""The node agent: one process, one Pyro5 daemon serving every actor of the node, and a
scheduler (actors.node.scheduler) that polls the sensors; the node's role adds the rest (see actors.node.role)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from Pyro5.server import Daemon, expose

from actors.base import Actor
from actors.devices.sensor import SensorActor
from actors.errors import cannot_listen
from actors.node.config import NodeConfig, SensorConfig
from actors.node.jobs import JobContext, JobRunner, JobsActor, actor_caller
from actors.node.role import NodeRole, make_role
from actors.node.scheduler import NodeScheduler
from actors.node.systemd import announce_started, announce_stopping
from actors.node.version import package_version
from hal.context import HalContext, resolve_mode
from hal.names import object_name
from hal.readings import Reading, declare
from hal.sensor import SENSOR_KINDS
from nameserver.pyro import check_bind, configure, decode_calls_typed
from nameserver.registry import Registrar
from nameserver.security import HarvesterDaemon, apply_node_tls

log = logging.getLogger(__name__)
STOP_TIMEOUT = 5.0
FIRST_REGISTER_RETRY_S = 1.0


class Attachment(Protocol):
    """Something that runs beside a node (the hub's web server)."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


class AgentActor(Actor):
    """`harvester.<node>.agent`: what this node runs and how each of its actors is doing."""

    kind = "agent"

    def __init__(self, agent: NodeAgent) -> None:
        super().__init__(agent.config.name, "agent", agent.config.role)
        self._agent = agent

    @expose
    def info(self) -> dict[str, Any]:
        """Node name, role, profile, HAL mode, actors, and whether wasmtime is loaded."""
        cfg = self._agent.config
        return {"node": cfg.name, "role": cfg.role, "profile": cfg.profile, "hal": self._agent.hal.mode,
                "version": package_version(),
                "pid": os.getpid(), "actors": sorted(a.object_name for a in self._agent.actors),
                "sensors": {s.name: {"kind": s.kind, "interval_s": s.interval} for s in cfg.sensors},
                "wasmtime_loaded": "wasmtime" in sys.modules, "problems": self._agent.role.problems(),
                "clock": self._agent.role.clock_status().to_dict(),
                "notes": self._agent.role.notes()}

    @expose
    def health(self) -> dict[str, Any]:
        """The agent's health; 'degraded' with the reason while the node cannot keep its readings (disk full)."""
        out = super().health()
        problems = self._agent.role.problems()
        if problems:
            out["state"], out["last_error"] = "degraded", problems[0]
        return out

    @expose
    def fleet_health(self) -> dict[str, Any]:
        """health() of every actor on this node, plus the role's own state (a spoke's outbox)."""
        out: dict[str, Any] = {a.object_name: a.health() for a in self._agent.actors}
        out.update(self._agent.role.health())
        return out


class NodeAgent:
    """Builds a node from its config and runs it until stop(): composition and lifecycle only.

    What the node does because it is a hub or a spoke lives in its role object (`self.role`),
    chosen once; what runs beside it (the hub's web server) is attached by the composition
    root (actors.cli.compose)."""

    def __init__(self, config: NodeConfig, hal_mode: str | None = None) -> None:
        configure()
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.hal = HalContext(resolve_mode(hal_mode, config.hal), config.name, config.state_dir,
                              mock=config.mock)
        for q in config.quantities:  # before any sensor or plugin builds a reading of one
            declare(q, f"{config.name}'s config")
        self.role: NodeRole = make_role(config, self._evaluate_plugins)
        self.role.clock_status = self.hal.kernel_clock().status
        self.actors: list[Actor] = []
        self.sensors: list[SensorActor] = []
        self._attachments: list[Callable[[NodeAgent], Attachment]] = []
        self.attached: list[Attachment] = []
        self._stop = threading.Event()
        self.registrar = Registrar(config.hub_hosts)
        # every further hub adds a push or sync job that may wait on a frozen peer
        self.scheduler = NodeScheduler(max_workers=2 + 2 * len(config.hub_hosts), max_instances=1, coalesce=True,
                                       misfire_grace_time=30)
        self.daemon: Daemon | None = None

    def attach(self, factory: Callable[[NodeAgent], Attachment]) -> None:
        """Run something beside the node: built once the actors exist, started last, stopped first."""
        self._attachments.append(factory)

    # -- construction -------------------------------------------------------------------
    def _build_actors(self) -> None:
        cfg = self.config
        self.actors.extend(self.role.build())
        for sc in cfg.sensors:
            actor = SensorActor(cfg.name, sc.name, self._sensor_builder(sc), SENSOR_KINDS[sc.kind].quantities,
                                sc.interval, sc.stale_after, role=cfg.role)
            self.sensors.append(actor)
            self.actors.append(actor)
        self._build_actuators()
        if self.hal.mode == "mock":  # the REPL's handle on the emulated room; real hardware has none
            from actors.devices.room import RoomActor

            self.actors.append(RoomActor(cfg.name, self.hal, [s.name for s in cfg.sensors
                                                              if "iaq" in SENSOR_KINDS[s.kind].quantities],
                                         role=cfg.role))
        self._build_plugins()
        self._remote_call = actor_caller(cfg.hub_host, cfg.nameserver_port)
        self.jobs = JobRunner(self.role.job_specs(cfg.jobs), self.scheduler, JobContext(
            cfg.name, self._call_actor, self.role.hub,
            object_name(cfg.name, "buzzer") if cfg.buzzer is not None else None))
        self.actors.append(JobsActor(cfg.name, self.jobs, role=cfg.role))
        self.actors.append(AgentActor(self))

    def _build_actuators(self) -> None:
        """The LED strip and the buzzer, where configured (imported only then: gpiozero costs RSS)."""
        cfg = self.config
        if cfg.leds is not None:
            from actors.devices.actuators import LedsActor
            from hal.leds import LedStrip

            leds = cfg.leds
            self.actors.append(LedsActor(cfg.name, lambda: LedStrip(
                self.hal.pixel_backend(leds.count, leds.gpio, leds.brightness)), role=cfg.role))
        if cfg.buzzer is not None:
            from actors.devices.actuators import BuzzerActor
            from hal.buzzer import BuzzerDevice

            buzzer = cfg.buzzer
            self.actors.append(BuzzerActor(cfg.name, lambda: BuzzerDevice(
                buzzer.gpio, self.hal.pin_factory(), tonal=buzzer.tonal), role=cfg.role))

    def _call_actor(self, name: str, method: str, args: tuple, kwargs: dict, timeout: float) -> Any:
        """Jobs call this node's own actors directly (no name server needed at boot), others remotely."""
        local = next((a for a in self.actors if a.object_name == name), None)
        if local is None:
            return self._remote_call(name, method, args, kwargs, timeout)
        fn = getattr(local, method, None)
        if fn is None or not getattr(fn, "_pyroExposed", False):
            raise AttributeError(f"{name} has no remote method {method!r}")
        return fn(*args, **kwargs)

    def _sensor_builder(self, sc: SensorConfig) -> Callable[[], Any]:
        kind = SENSOR_KINDS[sc.kind]
        params = dict(sc.params)
        if sc.kind == "network":
            # Every node watches its link to the hub; configured peers come on top.
            targets = dict(params.get("targets") or {})
            if not self.config.is_hub:
                targets.setdefault("hub", f"{self.config.hub_host}:{self.config.nameserver_port}")
            params["targets"] = targets
        return lambda: kind.build(self.hal, sc.name, params)

    def _build_plugins(self) -> None:
        """The plugin host (WASM or native by profile) and its actor, over this node's devices.

        The host, and the modules it needs, come with the folder's first plugin file
        (plugins.lazy): a node without plugins does not pay for them."""
        from actors.devices.plugin_runner import PluginsActor
        from plugins.folder import seed_bundled
        from plugins.lazy import LazyPluginHost

        cfg = self.config
        plugin_dir = cfg.plugin_dir or cfg.state_dir / "plugins"
        seeded = seed_bundled(plugin_dir)  # first start only: the bundled alert table, editable
        if seeded:
            log.info("plugin folder %s seeded with %s", plugin_dir, ", ".join(seeded))
        by_name = {a.name: a for a in self.actors}
        state_dir = cfg.state_dir / "plugin-state"

        def create(samples: Any) -> Any:
            from actors.devices.plugin_runner import remote_actuators
            from plugins.host import PluginHost
            from plugins.services import NodeServices

            services = NodeServices(cfg.name, leds=by_name.get("leds"), buzzer=by_name.get("buzzer"),
                                    i2c_bus=self.hal.i2c_bus, alert_sink=self.role.alert,
                                    remote=remote_actuators(cfg.hub_host, cfg.nameserver_port))
            return PluginHost(cfg.name, plugin_dir, cfg.profile, services, state_dir, samples=samples)

        self.plugins = LazyPluginHost(cfg.name, plugin_dir, cfg.profile, create, state_dir)
        plugins = self.plugins
        self.role.declared_quantities = lambda: [*cfg.quantities, *plugins.declared()]
        self.actors.append(PluginsActor(cfg.name, self.plugins, role=cfg.role))

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the role's listeners, the daemon, the scheduler and what is attached."""
        cfg = self.config
        if cfg.security.tls:  # before any socket: Pyro5's TLS settings are process-wide
            apply_node_tls(cfg)
        check_bind(cfg.agent_host, tls=cfg.security.tls, allow_insecure=cfg.allow_insecure_lan)
        self._build_actors()
        self.role.start()
        try:
            self.daemon = HarvesterDaemon(host=cfg.agent_host, port=cfg.agent_port)
        except OSError as exc:
            raise cannot_listen("agent.port", cfg.agent_host, cfg.agent_port, exc) from exc
        for actor in self.actors:
            uri = self.daemon.register(actor, objectId=actor.object_name)
            for method, call in actor.typed_calls().items():
                decode_calls_typed(actor.object_name, method, call)
            self.registrar.add(actor.object_name, str(uri), actor.metadata())
        threading.Thread(target=self.daemon.requestLoop, name="pyro-daemon", daemon=True).start()
        log.info("%s serving %d actors at %s", cfg.name, len(self.actors), self.daemon.locationStr)
        registered = self.registrar.sweep()
        self._install_jobs(registered)
        self.attached = [factory(self) for factory in self._attachments]
        for service in self.attached:
            service.start()
        self.scheduler.start()
        threading.Thread(target=self.jobs.apply_quiet_hours_now, name="quiet-hours", daemon=True).start()

    def _install_jobs(self, registered: bool) -> None:
        now = time_now()
        for actor in self.sensors:
            self.scheduler.add_job(self._poll, "interval", args=[actor], seconds=actor.interval,
                                   id=f"poll:{actor.name}", next_run_time=now)
        self.scheduler.add_job(self.registrar.sweep, "interval", seconds=self.config.register_interval,
                               id="register")
        if not registered:
            # A node started with its hub (a power cut, the demo) may find the name server not
            # up yet; its pushes get through as soon as the hub is, so its names must too, not a
            # whole register interval later (the hub would show it online with no actors).
            self.scheduler.add_job(self._register_until_done, "interval", seconds=FIRST_REGISTER_RETRY_S,
                                   id="register:first")
        self.role.install(self.scheduler, now)
        # a first sandbox compile takes seconds: scan in a job, never in start()
        self.scheduler.add_job(self.plugins.scan, "interval", seconds=2.0, id="plugins:scan", next_run_time=now)
        self.scheduler.add_job(self._poll_plugin_sensors, "interval", seconds=1.0, id="plugins:poll")
        trim = malloc_trimmer()
        if trim is not None:
            self.scheduler.add_job(tidy_memory, "interval", args=[trim, not self.config.is_hub],
                                   seconds=TRIM_EVERY_S, id="memory:trim")
        self.jobs.install()

    def _register_until_done(self) -> None:
        """Retry the first registration every second until it succeeds, then stop retrying."""
        if self.registrar.sweep():
            self.scheduler.remove_job("register:first")

    def _evaluate_plugins(self, readings: list[Reading]) -> None:
        try:
            self.plugins.evaluate(readings)  # plugin faults become outcomes; this guards the host itself
        except Exception:
            log.exception("plugin evaluation failed; the readings go on to the hub regardless")

    def _poll(self, actor: SensorActor) -> None:
        readings = actor.poll()
        if not readings:
            return
        self._evaluate_plugins(readings)
        self.role.store(readings)

    def _poll_plugin_sensors(self) -> None:
        """Sensors that plugins implement over I2C ([sensor] in their manifest)."""
        readings = self.plugins.poll_due()
        for key in {(r.node, r.sensor) for r in readings}:
            batch = [r for r in readings if (r.node, r.sensor) == key]
            self._evaluate_plugins(batch)
            self.role.store(batch)

    def run_forever(self) -> None:
        """Start, then block until SIGTERM/SIGINT, then stop cleanly."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            self.start()
        except BaseException:
            self.stop()  # what did start (a name server, the daemon) must not outlive the failure
            raise
        announce_started(self)  # READY=1, and WATCHDOG=1 beats when the unit sets WatchdogSec=
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            announce_stopping()
            self.stop()

    def stop(self) -> None:
        """Stop jobs and what is attached, unregister names, close the daemon, devices and role."""
        self._stop.set()
        if self.scheduler.running:
            # A job stuck on hardware must not make the node unkillable: wait a bounded time.
            waiter = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True)
            waiter.start()
            waiter.join(STOP_TIMEOUT)
            if waiter.is_alive():
                log.warning("a scheduled job did not finish within %ss; stopping anyway", STOP_TIMEOUT)
        for service in reversed(self.attached):
            service.stop()
        self.registrar.unregister_all()
        if self.daemon is not None:
            self.daemon.shutdown()
        for actor in self.actors:
            close = getattr(actor, "close", None)
            if close is not None:
                close()
        if hasattr(self, "plugins"):
            self.plugins.close()
        self.role.stop()
        self.hal.close()


M_ARENA_MAX = -8  # glibc's mallopt() parameter
TRIM_EVERY_S = 60.0


def cap_malloc_arenas() -> bool:
    """Make every thread of a node share glibc's main malloc arena.

    glibc gives each thread that allocates concurrently its own arena (up to 8 per core)
    and keeps the freed memory of each. On the demo's Pi Zero node that was 4 MB of RSS
    for a dozen mostly idle threads (40.6 MB against 36.7 MB with one arena). On the hub,
    whose Pyro5 threads serve every spoke's connections, the arenas grew by 4.6 MB in a
    30-minute soak, and at 400 spokes x 10 sensors it held 140-142 MB against 116-117 MB
    with one arena, for the same CPU (51-55 % against 53-54 %) and no worse latency.
    Called before any thread starts, because arenas already handed out stay. Returns
    whether the cap took effect (it cannot on a libc without mallopt, such as musl)."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1))
    except (AttributeError, OSError):
        return False


def malloc_trimmer() -> Callable[[], int] | None:
    """glibc's malloc_trim(0), for a node to run every TRIM_EVERY_S; None on a libc without it.

    free() gives memory back to the system only from the top of the heap; pages freed below a
    block still in use stay resident. Start-up (imports, the first plugin loads, SQLite)
    leaves about 1.2 MB of them in the Pi Zero node's 6 MB heap, and later work adds more.
    malloc_trim(0) releases every free page (madvise), whatever its place. It holds the arena
    lock while it walks the heap: well under a millisecond for a node's heap."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


def tidy_memory(trim: Callable[[], int], collect: bool = True) -> int:
    """The memory:trim job: a full garbage collection (unless `collect` is false), then the trim.

    A node makes next to no cyclic garbage; the collection is for CPython's free lists (freed
    tuples, lists, dicts and floats kept for reuse), which only a collection of the oldest
    generation empties, and which otherwise hold their high-water mark of objects for good,
    in pymalloc pools that could be released. The Pi Zero node's grew for its first quarter of
    an hour. A collection walks every tracked object: a few milliseconds on a spoke. Not on
    a hub: with a thousand spokes it walked their state for 80-90 ms of CPU every minute while
    every thread waited (the slowest answers of a load run came then), to empty free lists of
    a few megabytes in a process of two hundred. The hub tunes its own collector (hub.role)."""
    if collect:
        gc.collect()
    return trim()


def time_now() -> datetime:
    """Now as an aware datetime, for a job's first run."""
    return datetime.now(UTC)

