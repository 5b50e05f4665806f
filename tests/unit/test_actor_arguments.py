"""Remote-method argument checks: one helper (actors.base), one typed error per actor, answers after commands."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from gpiozero.pins.mock import MockFactory
from Pyro5.api import expose

from actors.base import Actor, Arg, Bool, Int, ListOf, Number, Record, Str, remote
from actors.devices.actuators import BuzzerActor, LedsActor
from actors.devices.plugin_runner import PluginsActor
from actors.devices.sensor import SensorActor
from actors.errors import BadRequest
from actors.node.agent import AgentActor
from actors.node.jobs import JobContext, JobRunner, JobsActor
from hal.buzzer import BuzzerDevice
from hal.errors import ActuatorArgumentError
from hal.leds import LedStrip, MemoryPixels
from plugins.host import PluginHost
from plugins.services import RecordingServices

PIN = 17
# Every actor class a node serves (the hub's aggregator is the hub's own business).
ACTOR_CLASSES: list[type[Actor]] = [Actor, SensorActor, LedsActor, BuzzerActor, PluginsActor, JobsActor, AgentActor]
COUNTERS = {"uptime_s", "calls", "errors", "busy_rejections", "refused", "slow_calls", "waiting", "mean_call_ms"}


@pytest.fixture
def leds() -> Iterator[LedsActor]:
    actor = LedsActor("pi4", lambda: LedStrip(MemoryPixels(count=11)))
    yield actor
    actor.close()


@pytest.fixture
def buzzer(factory: MockFactory) -> Iterator[BuzzerActor]:
    actor = BuzzerActor("pi4", lambda: BuzzerDevice(PIN, factory))
    yield actor
    actor.close()


def health_without_counters(actor: Actor) -> dict[str, Any]:
    """health() minus what every call moves: what a refused call must leave alone."""
    return {k: v for k, v in actor.health().items() if k not in COUNTERS}


# --- the checks themselves -----------------------------------------------------------------
@pytest.mark.parametrize("spec, value", [
    (Int(0, 10), True), (Int(0, 10), "3"), (Int(0, 10), 3.0), (Int(0, 10), 11), (Int(0, 10), -1),
    (Int(0, 10), 10**400), (Int(0, 10), None), (Int(0, 10), [3]),
    (Number(0, 1), "0.5"), (Number(0, 1), False), (Number(0, 1), math.nan), (Number(), math.inf),
    (Number(), -math.inf), (Number(), 10**400), (Number(0, 1), 1.5), (Number(0, 1), {"value": 0.5}),
    (Str(), ""), (Str(), "x" * 65), (Str(), 5), (Str(), b"red"), (Str(choices=("a", "b")), "c"),
    (Bool(), "no"), (Bool(), 0), (Bool(), 1), (Bool(), None),
    (Record(), {1: 2}), (Record(), {"a": [1]}), (Record(), {"a": math.nan}), (Record(), {"a": "x" * 1025}),
    (Record(max_keys=1), {"a": 1, "b": 2}), (Record(), [("a", 1)]),
    (ListOf(Int(0, 1), 2), [0, 1, 0]), (ListOf(Int(0, 1), 2), [2]), (ListOf(Int(0, 1), 2), "01"),
])
def test_arg_refuses_wrong_types_and_ranges(spec: Arg, value: Any) -> None:
    with pytest.raises(BadRequest, match=r"^x must be .*, got "):
        spec.check("x", value, BadRequest)


@pytest.mark.parametrize("spec, value, expected", [
    (Int(0, 10), 3, 3), (Number(0, 1), 1, 1.0), (Number(0, 1), 0.5, 0.5), (Number(0, 1), -0.0, 0.0),
    (Str(), "é" * 64, "é" * 64), (Bool(), False, False), (Int(0, 1, optional=True), None, None),
    (Record(), {"value": -0.0, "reason": None, "ok": True}, {"value": 0.0, "reason": None, "ok": True}),
    (ListOf(Int(0, 1), 2), (0, 1), [0, 1]),
])
def test_arg_accepts_and_normalises(spec: Arg, value: Any, expected: Any) -> None:
    got = spec.check("x", value, BadRequest)
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, float):
        assert math.copysign(1.0, got) == 1.0  # -0.0 == 0.0: the sign is what must not survive


def test_arg_error_message_stays_short_for_huge_values() -> None:
    with pytest.raises(BadRequest, match="got an int of 1329 bits$"):
        Int(0, 1).check("x", 10**400, BadRequest)
    with pytest.raises(BadRequest) as info:
        Str().check("x", "y" * 100_000, BadRequest)
    assert len(str(info.value)) < 200


def test_remote_refuses_specs_for_unknown_parameters() -> None:
    with pytest.raises(TypeError, match="unknown parameter"):
        remote(colour=Str())(lambda self, index: index)


@pytest.mark.parametrize("cls", ACTOR_CLASSES, ids=lambda c: c.__name__)
def test_every_exposed_method_checks_every_argument(cls: type[Actor]) -> None:
    exposed = {name: fn for name in dir(cls) if not name.startswith("_")
               and getattr(fn := getattr(cls, name), "_pyroExposed", False)}
    assert {"ping", "health", "describe"} <= set(exposed)
    for name, fn in exposed.items():
        assert getattr(fn, "_harvester_checked", False), f"{cls.__name__}.{name} is exposed unchecked"
        params = [p for p in inspect.signature(inspect.unwrap(fn)).parameters if p != "self"]
        assert sorted(fn._harvester_args) == sorted(params), f"{cls.__name__}.{name} leaves an argument unchecked"


# --- the same typed error from every actor -------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda b: b.beep("3"), lambda b: b.beep(True), lambda b: b.beep(1, 200.0), lambda b: b.beep(1, 200, math.nan),
    lambda b: b.mute("no"), lambda b: b.mute(0), lambda b: b.mute(None), lambda b: b.play("x" * 10_000),
    lambda b: b.play(["alert"]), lambda b: b.on(1), lambda b: b.state(verbose=True), lambda b: b.beep(1, 200, None, 4),
])
def test_buzzer_refuses_bad_arguments_typed_and_changes_nothing(buzzer: BuzzerActor, factory: MockFactory,
                                                                call: Any) -> None:
    before, health = buzzer.state(), health_without_counters(buzzer)
    with pytest.raises(ActuatorArgumentError):
        call(buzzer)
    assert buzzer.state() == before and buzzer.state()["muted"] is False
    assert [s.state for s in factory.pin(PIN).states] == [0]  # the pin never moved
    assert health_without_counters(buzzer) == health
    assert buzzer.health()["refused"] == 1 and buzzer.health()["errors"] == 0


@pytest.mark.parametrize("call", [
    lambda s: s.set_pixel(0, 1, 2, True), lambda s: s.set_pixel(-1, 1, 2, 3), lambda s: s.set_pixel(11, 1, 2, 3),
    lambda s: s.set_pixel(0, 1, 2), lambda s: s.fill(0, 0, 2**64), lambda s: s.fill("1", 0, 0),
    lambda s: s.set_named(0, ""), lambda s: s.set_named(0, "mauve"), lambda s: s.set_named(0, "red" * 20),
    lambda s: s.brightness(math.nan), lambda s: s.brightness(math.inf), lambda s: s.brightness("0.5"),
    lambda s: s.brightness(True), lambda s: s.brightness(-0.1), lambda s: s.clear(1),
])
def test_leds_refuse_bad_arguments_typed_and_change_nothing(leds: LedsActor, call: Any) -> None:
    before, health = leds.state(), health_without_counters(leds)
    with pytest.raises(ActuatorArgumentError):
        call(leds)
    assert leds.state() == before and health_without_counters(leds) == health


def test_leds_brightness_minus_zero_answers_zero(leds: LedsActor) -> None:
    assert repr(leds.brightness(-0.0)) == repr(leds.state()["brightness"]) == "0.0"
    assert leds.brightness(1) == 1.0 and type(leds.brightness()) is float


def test_jobs_refuse_bad_arguments_with_bad_request() -> None:
    actor = JobsActor("pi4", JobRunner([], BackgroundScheduler(), JobContext("pi4", lambda *_: None)))
    for call in (lambda: actor.run(5), lambda: actor.run("x" * 49), lambda: actor.run(), lambda: actor.list(1),
                 lambda: actor.run("nope")):
        with pytest.raises(BadRequest):
            call()
    assert actor.health()["refused"] == 5 and actor.health()["last_error"] is None


READING = {"node": "pi4", "sensor": "dht22", "quantity": "temperature", "value": 21.5, "unit": "°C",
           "ts": 1.7e9, "quality": "ok", "reason": None}


@pytest.mark.parametrize("call", [
    lambda p: p.evaluate([{1: 2}]),  # Reading.from_dict would sort and join the int key: TypeError
    lambda p: p.evaluate([{**READING, "ts": 10**400}]),  # math.isfinite(10**400): OverflowError
    lambda p: p.evaluate([{**READING, "value": [21.5]}]), lambda p: p.evaluate(READING),
    lambda p: p.evaluate([READING] * 1001), lambda p: p.evaluate([READING], None, "yes"),
    lambda p: p.evaluate([{**READING, "value": 900.0}], None, True),  # the reading's own rules, same error
    lambda p: p.alerts(0), lambda p: p.alerts("5"), lambda p: p.alerts(True), lambda p: p.acknowledge(5),
    lambda p: p.acknowledge("x" * 65), lambda p: p.status(["steady"]), lambda p: p.enable(None),
    lambda p: p.disable("nope"), lambda p: p.poll(), lambda p: p.reload(1.5), lambda p: p.list(None),
])
def test_plugins_refuse_bad_arguments_with_bad_request(tmp_path: Any, call: Any) -> None:
    host = PluginHost("pi4", tmp_path / "plugins", "native", RecordingServices("pi4"), tmp_path / "state")
    actor = PluginsActor("pi4", host)
    try:
        with pytest.raises(BadRequest):
            call(actor)
        assert actor.alerts() == {"active": [], "history": []} and host.evaluate_latest() == []
        assert actor.health()["refused"] == 1 and actor.health()["last_error"] is None
    finally:
        host.close()


def test_bare_expose_methods_of_subclasses_are_checked_too() -> None:
    class Plain(Actor):
        """An actor written with Pyro5's own @expose, as AgentActor is."""

        @expose
        def info(self) -> str:
            """Answer 'ok'."""
            return "ok"

    actor = Plain("pi4", "plain")
    assert actor.info() == "ok" and actor.ping() == "pong"
    for call in (lambda: actor.info(1), lambda: actor.ping(x=1), lambda: actor.health(True), lambda: actor.describe(1)):
        with pytest.raises(BadRequest, match=r"\(\): "):
            call()
    assert "info" in actor.describe() and actor.describe()["info"] == "info() -> str: Answer 'ok'."


# --- every actuator command answers the state after it -------------------------------------
def test_buzzer_on_answers_the_state_after_the_command(buzzer: BuzzerActor) -> None:
    answer = buzzer.on()
    assert answer["sounded"] is True and answer["active"] is True and answer["pattern"] == "continuous"
    assert answer["last_command"]["command"] == "on"
    assert {k: v for k, v in answer.items() if k not in ("sounded", "reason")} == buzzer.state()


def test_buzzer_play_answers_the_state_after_the_command(buzzer: BuzzerActor) -> None:
    answer = buzzer.play("critical")  # 6 beeps of 100 ms: still running when the answer is built
    assert answer["sounded"] is True and answer["active"] is True and answer["pattern"] == "critical"
    assert answer["last_command"]["command"] == "play" and answer["beeps"] >= 1


def test_buzzer_commands_answer_the_state_after_them_when_muted(buzzer: BuzzerActor) -> None:
    assert buzzer.mute(True)["muted"] is True
    for command in (buzzer.on, lambda: buzzer.play("alert"), lambda: buzzer.beep(2, 100)):
        answer = command()
        assert answer["sounded"] is False and answer["last_command"]["result"] == "muted"
        assert answer["suppressed"] == buzzer.state()["suppressed"]
    assert buzzer.mute(False)["muted"] is False


@pytest.mark.parametrize("command, check", [
    (lambda s: s.set_pixel(3, 1, 2, 3), lambda st: st["pixels"][3] == [1, 2, 3]),
    (lambda s: s.set_named(4, "red"), lambda st: st["pixels"][4] == [255, 0, 0]),
    (lambda s: s.fill(9, 8, 7), lambda st: all(p == [9, 8, 7] for p in st["pixels"])),
    (lambda s: s.clear(), lambda st: all(p == [0, 0, 0] for p in st["pixels"])),
])
def test_leds_commands_answer_the_state_after_them(leds: LedsActor, command: Any, check: Any) -> None:
    leds.fill(50, 50, 50)
    answer = command(leds)
    assert check(answer) and answer == leds.state()
