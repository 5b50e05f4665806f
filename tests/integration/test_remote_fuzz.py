"""Every remote method of a node's actors, fuzzed over a real Pyro5 daemon: only typed errors come
back, and a refused call changes nothing (actor state, health, LED pixels, buzzer pin)."""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from Pyro5.api import Daemon, Proxy
from Pyro5.serializers import serializers

from actors.base import Actor, Arg, Bool, Int, ListOf, Number, Str
from actors.errors import ActorUnavailable, BadRequest, Busy
from actors.node.agent import NodeAgent
from actors.node.config import load_config
from hal.errors import ActuatorArgumentError
from nameserver.pyro import configure
from tests.helpers import CLEAR_LEDS_JOB, HOST, free_port, write_node_config
from tests.plugins_fixtures import write_plugin

# A refusal: the caller's mistake, which must leave everything as it was.
REFUSED = (ActuatorArgumentError, BadRequest)
# Everything a remote caller may legitimately get back as an error.
TYPED = (*REFUSED, Busy, ActorUnavailable, PermissionError)
COUNTERS = {"uptime_s", "calls", "errors", "busy_rejections", "refused", "slow_calls", "waiting", "mean_call_ms"}
ACTORS = ("dht22", "leds", "buzzer", "plugins", "jobs", "agent", "room")
SERIALIZERS = ("msgpack", "serpent")  # ours, and what a plain Pyro5 proxy speaks
BUZZER_GPIO = 17

# Beeps, lights and raises an alert above 30 °C: a valid evaluate(apply=True) touches every actuator.
ALARM = '''
def evaluate(readings, host):
    r = readings[0]
    if r.value > 30:
        host.set_led(1, "red")
        host.beep(2, 100)
        host.raise_alert("hot", "too hot", sensor=r.sensor, value=r.value)
    return {"value": r.value}
'''
JOBS = CLEAR_LEDS_JOB + '''
[[jobs]]
name = "night"
kind = "quiet_hours"
start = "22:00"
end = "07:00"
'''


def reading(value: float) -> dict[str, Any]:
    """A valid temperature reading dict of pi4's DHT22."""
    return {"node": "pi4", "sensor": "dht22", "quantity": "temperature", "value": value, "unit": "°C",
            "ts": 1.7e9, "quality": "ok", "reason": None}


# Valid values in the mix, so that generated calls also succeed now and then (and change state).
VALID_STRINGS = ["alarm", "hot", "red", "Amber", "off", "alert", "confirm", "clear-leds", "night", "pi4"]
VALID_OTHER = [[reading(35.0)], [reading(20.0)], reading(20.0), 0, 1, 3, 10, 100, 200, 255, 0.5, True, False]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.sampled_from([-1, 256, 1024, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 1e-300, math.nan, math.inf, -math.inf]),
    st.text(max_size=12), st.text(min_size=60, max_size=300),  # non-ASCII included: text() draws all of Unicode
    st.sampled_from(VALID_STRINGS),
)
values = st.one_of(
    st.sampled_from(VALID_STRINGS + VALID_OTHER), scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(sorted(reading(0))), st.integers()), scalars,
                    max_size=4),
    st.lists(st.dictionaries(st.sampled_from(sorted(reading(0))), scalars, max_size=8), min_size=1, max_size=2),
)


def plausible(spec: Arg | None) -> st.SearchStrategy[Any]:
    """Values of the kind a parameter's spec asks for, its bounds and just past them included."""
    if isinstance(spec, Int):
        # small values first: the strip has 11 pixels, though an index may go up to 1023
        found: st.SearchStrategy[Any] = st.one_of(st.integers(spec.lo, min(spec.hi, spec.lo + 12)),
                                                  st.integers(spec.lo, spec.hi),
                                                  st.sampled_from([spec.lo - 1, spec.hi + 1]))
    elif isinstance(spec, Number):
        found = st.floats(max(spec.lo, -1e6), min(spec.hi, 1e6))
    elif isinstance(spec, Str):
        found = st.sampled_from([*spec.choices, *VALID_STRINGS])
    elif isinstance(spec, Bool):
        found = st.booleans()
    elif isinstance(spec, ListOf):
        found = st.sampled_from([[reading(35.0)], [reading(20.0)], [{**reading(20.0), "value": 900.0}]])
    else:
        found = st.sampled_from(VALID_STRINGS + VALID_OTHER)
    return st.one_of(found, st.none()) if spec is not None and spec.optional else found


def non_str_key(value: Any) -> bool:
    """True if a dict anywhere in `value` has a key that is not a string."""
    if isinstance(value, dict):
        return any(not isinstance(k, str) or non_str_key(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(non_str_key(v) for v in value)
    return False


@dataclass
class Served:
    """A spoke's actors (mock hardware) behind a real Pyro5 daemon on 127.0.0.1, nothing scheduled."""

    agent: NodeAgent
    actors: dict[str, Actor]
    uris: dict[str, str]
    pixels: list[Any] = field(default_factory=list)
    proxies: dict[tuple[str, str], Proxy] = field(default_factory=dict)

    def proxy(self, actor: str, serializer: str) -> Proxy:
        """One proxy per actor and serializer, reused across examples."""
        key = (actor, serializer)
        if key not in self.proxies:
            proxy = Proxy(self.uris[actor])
            proxy._pyroSerializer = serializer
            proxy._pyroTimeout = 10
            self.proxies[key] = proxy
        return self.proxies[key]

    def snapshot(self) -> dict[str, Any]:
        """Everything a refused call must leave as it was, read in-process."""
        a = self.actors
        out: dict[str, Any] = {name: {k: v for k, v in actor.health().items() if k not in COUNTERS}
                               for name, actor in a.items()}
        pin = self.agent.hal.pin_factory().pin(BUZZER_GPIO)
        backend = self.pixels[0]
        out["leds:state"], out["leds:frames"] = a["leds"].state(), (backend.shown, backend.current().pixels)
        out["buzzer:state"], out["buzzer:pin"] = a["buzzer"].state(), (pin.state, len(pin.states))
        out["plugins:list"], out["plugins:alerts"] = a["plugins"].list(), a["plugins"].alerts()
        out["plugins:disabled"] = sorted(n for n, s in a["plugins"].status().items() if s["state"] == "disabled")
        out["jobs:list"] = a["jobs"].list()
        out["agent:info"], out["dht22:info"] = a["agent"].info(), a["dht22"].info()
        # without `stale`: that flag follows the wall clock, not the calls
        out["dht22:latest"] = [{k: v for k, v in r.items() if k != "stale"} for r in a["dht22"].latest()]
        return out

    def quiesce(self) -> None:
        """After a call that was accepted: stop any beep pattern, so nothing moves between examples."""
        self.actors["buzzer"].silence()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    configure()
    tmp = tmp_path_factory.mktemp("fuzz")
    plugins = tmp / "plugins"
    write_plugin(plugins, "alarm", ALARM, leds=[1], buzzer=True)
    path = write_node_config(tmp / "pi4.toml", "pi4", "spoke", free_port(), profile="native",
                             sensors=[{"name": "dht22", "kind": "dht22", "interval": 0.5}], leds=True, buzzer=True,
                             extra=f'[plugins]\ndir = "{plugins}"\n{JOBS}')
    agent = NodeAgent(load_config(path))
    pixels: list[Any] = []
    make_pixels = agent.hal.pixel_backend

    def recording_pixel_backend(count: int, gpio: int, brightness: float) -> Any:
        pixels.append(make_pixels(count, gpio, brightness))
        return pixels[-1]

    agent.hal.pixel_backend = recording_pixel_backend  # type: ignore[method-assign]
    # The actors as start() builds them, served without the scheduler, the registrar or the pusher:
    # nothing changes state on its own between two snapshots.
    agent._build_actors()
    agent.plugins.scan()
    actors = {a.name: a for a in agent.actors}
    daemon = Daemon(host=HOST, port=0)
    uris = {name: str(daemon.register(actor, objectId=actor.object_name)) for name, actor in actors.items()}
    agent.daemon = daemon
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    served = Served(agent, actors, uris, pixels)
    served.actors["leds"].state()  # build the strip now, so its backend is recorded
    # Polled once, as the scheduler would have: latest() before any poll answers ActorUnavailable,
    # which health() records as the actor's last error, and the snapshot would move it itself.
    actors["dht22"].poll()
    assert [p["name"] for p in actors["plugins"].list()] == ["alarm"] and len(pixels) == 1
    try:
        yield served
    finally:
        for proxy in served.proxies.values():
            proxy._pyroRelease()
        agent.stop()
        thread.join(timeout=10)


def exposed(cls: type) -> list[str]:
    """The remote methods of an actor class, as Pyro5 sees them (the `_pyroExposed` flag)."""
    return sorted(n for n in dir(cls) if not n.startswith("_") and getattr(getattr(cls, n), "_pyroExposed", False))


def actor_classes() -> dict[str, type]:
    """The class behind each served actor name (imported here: the agent module pulls in every actor)."""
    from actors.devices.actuators import BuzzerActor, LedsActor
    from actors.devices.plugin_runner import PluginsActor
    from actors.devices.room import RoomActor
    from actors.devices.sensor import SensorActor
    from actors.node.agent import AgentActor
    from actors.node.jobs import JobsActor

    return {"dht22": SensorActor, "leds": LedsActor, "buzzer": BuzzerActor, "plugins": PluginsActor,
            "jobs": JobsActor, "agent": AgentActor, "room": RoomActor}


CASES = [(name, method) for name, cls in actor_classes().items() for method in exposed(cls)]


def test_fuzz_cases_cover_every_remote_method(served: Served) -> None:
    for name in ACTORS:
        proxy = served.proxy(name, "msgpack")
        proxy._pyroBind()  # fetches the daemon's own list of exposed methods
        assert set(proxy._pyroMethods) == {m for n, m in CASES if n == name} == set(served.actors[name].describe())


@pytest.mark.parametrize("actor, method", CASES, ids=[f"{a}.{m}" for a, m in CASES])
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_fuzzed_arguments_get_typed_errors_and_refusals_change_nothing(served: Served, actor: str, method: str,
                                                                       data: st.DataObject) -> None:
    fn = getattr(type(served.actors[actor]), method)
    params = [p for p in inspect.signature(inspect.unwrap(fn)).parameters.values() if p.name != "self"]
    if data.draw(st.booleans(), label="plausible"):
        # the right arity and values near each parameter's declared range: these calls often
        # succeed (and change state), or are refused deeper down (a pixel past the strip's end)
        required = sum(p.default is inspect.Parameter.empty for p in params)
        arity = data.draw(st.integers(required, len(params)), label="arity")
        args = [data.draw(plausible(fn._harvester_args.get(p.name)), label=p.name) for p in params[:arity]]
        kwargs: dict[str, Any] = {}
    else:
        args = data.draw(st.lists(values, max_size=len(params) + 2), label="args")
        kwargs = data.draw(st.dictionaries(st.sampled_from([*(p.name for p in params), "bogus"]), values,
                                           max_size=2), label="kwargs")
    serializer = data.draw(st.sampled_from(SERIALIZERS), label="serializer")
    try:  # what the client cannot even encode never reaches the actor: not this test's subject
        serializers[serializer].dumpsCall("x", method, tuple(args), kwargs)
    except Exception:
        assume(False)
    # Pyro5's daemon decodes msgpack with strict_map_key and answers a non-string map key with a
    # bare ValueError before any actor is called: the transport's business, not the actors'.
    assume(serializer != "msgpack" or not non_str_key([args, kwargs]))
    before = served.snapshot()
    what = f"{actor}.{method}(*{args!r:.200}, **{kwargs!r:.200}) over {serializer}"
    try:
        getattr(served.proxy(actor, serializer), method)(*args, **kwargs)
    except TYPED as exc:
        # typed end to end: the class itself arrived, not a look-alike or a generic error
        assert type(exc).__module__ in ("actors.errors", "hal.errors", "builtins"), (what, exc)
        if isinstance(exc, REFUSED):
            assert served.snapshot() == before, f"refused {what} ({exc}) changed state"
            return
    except Exception as exc:
        pytest.fail(f"{what} answered an untyped {type(exc).__module__}.{type(exc).__name__}: {exc}")
    served.quiesce()


# --- the hostile pass's findings, through a remote caller --------------------------------
@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_remote_bad_arguments_arrive_typed(served: Served, serializer: str) -> None:
    buzzer, leds = served.proxy("buzzer", serializer), served.proxy("leds", serializer)
    before = served.snapshot()
    for call in (lambda: buzzer.beep("3"), lambda: buzzer.mute("no"), lambda: buzzer.mute(1),
                 lambda: leds.brightness(math.nan), lambda: leds.set_pixel(0, 1, 2, True), lambda: buzzer.on(1)):
        with pytest.raises(ActuatorArgumentError):
            call()
    for call in (lambda: served.proxy("plugins", serializer).alerts("5"),
                 lambda: served.proxy("jobs", serializer).run(["night"]),
                 lambda: served.proxy("agent", serializer).info(1),
                 lambda: served.proxy("dht22", serializer).read(True)):
        with pytest.raises(BadRequest):
            call()
    assert served.snapshot() == before


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_remote_commands_answer_the_state_after_them(served: Served, serializer: str) -> None:
    buzzer, leds = served.proxy("buzzer", serializer), served.proxy("leds", serializer)
    buzzer.mute(False)
    try:
        on = buzzer.on()
        assert on["active"] is True and on["pattern"] == "continuous" and on["last_command"]["command"] == "on"
        played = buzzer.play("critical")
        assert played["pattern"] == "critical" and played["last_command"]["command"] == "play"
        off = buzzer.off()
        assert off["active"] is False and off["last_command"]["command"] == "off"
        level = leds.brightness(-0.0)
        assert repr(level) == repr(leds.state()["brightness"]) == "0.0"
    finally:
        served.quiesce()
        leds.brightness(0.3)
