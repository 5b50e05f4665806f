"""Buzzer tests: gpiozero's MockPWMPin records every pin state, the tests read that history."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.buzzer import PATTERNS, BuzzerDevice
from hal.context import HalContext
from hal.errors import ActuatorArgumentError, DeviceUnavailable, HalConfigError

PIN = 17


class FrequencyRecordingPin(MockPWMPin):
    """MockPWMPin that also keeps a history of PWM frequencies (the tones played)."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.frequencies: list[float | None] = []

    def _set_frequency(self, value: float | None) -> None:
        self.frequencies.append(value)
        super()._set_frequency(value)


@pytest.fixture
def buzzer(factory: MockFactory) -> Iterator[BuzzerDevice]:
    device = BuzzerDevice(PIN, factory, clock=lambda: 1234.5)
    yield device
    device.close()


def history(pin: Any) -> list[float]:
    return [float(s.state) for s in pin.states]


def wait_until(predicate: Any, timeout: float = 2.0) -> None:
    """Poll briefly for another thread to reach a state (bounded, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def test_buzzer_beep_wait_leaves_pin_history(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    result = buzzer.beep(count=3, on_ms=10, off_ms=10, wait=True)
    assert result == {"sounded": True, "reason": None}
    pin = factory.pin(PIN)
    assert history(pin) == [0, 1, 0, 1, 0, 1, 0]
    pin.assert_states([False, True, False, True, False, True, False])
    state = buzzer.state()
    assert state["beeps"] == 3
    assert state["active"] is False
    assert state["pattern"] is None


def test_buzzer_beep_durations_follow_on_and_off_ms(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    buzzer.beep(count=2, on_ms=20, off_ms=30, wait=True)
    # PinState.timestamp is the time spent in the previous state.
    deltas = [s.timestamp for s in factory.pin(PIN).states[2:]]
    on1, gap, on2 = deltas
    assert on1 >= 0.018 and on2 >= 0.018
    assert gap >= 0.027


def test_buzzer_beep_does_not_block_by_default(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    started = time.monotonic()
    result = buzzer.beep(count=20, on_ms=5000, off_ms=5000)
    assert time.monotonic() - started < 1.0
    assert result["sounded"] is True
    pin = factory.pin(PIN)
    assert pin.state == 1
    state = buzzer.state()
    assert state["active"] is True
    assert state["pattern"] == "beep 20x5000/5000ms"
    buzzer.silence()
    assert history(pin) == [0, 1, 0]
    state = buzzer.state()
    assert state["active"] is False and state["beeps"] == 1
    assert state["last_command"]["command"] == "silence"


def test_buzzer_silence_from_another_thread_ends_a_waited_beep(buzzer: BuzzerDevice) -> None:
    done = threading.Event()

    def long_beep() -> None:
        buzzer.beep(count=20, on_ms=5000, off_ms=5000, wait=True)
        done.set()

    caller = threading.Thread(target=long_beep)
    started = time.monotonic()
    caller.start()
    wait_until(lambda: buzzer.state()["active"])
    buzzer.silence()
    assert done.wait(2.0)
    caller.join(2.0)
    assert time.monotonic() - started < 2.0


def test_buzzer_new_beep_replaces_running_pattern(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    buzzer.beep(count=20, on_ms=5000, off_ms=5000)
    buzzer.beep(count=1, on_ms=10, wait=True)
    assert history(factory.pin(PIN)) == [0, 1, 0, 1, 0]
    assert buzzer.state()["beeps"] == 2
    assert buzzer.state()["active"] is False


def test_buzzer_play_named_pattern(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    assert PATTERNS["alert"] == (3, 150, 100)
    assert PATTERNS["warning"] == (1, 400, 0)
    buzzer.play("confirm", wait=True)
    assert history(factory.pin(PIN)) == [0, 1, 0]
    buzzer.play("alert")
    assert buzzer.state()["pattern"] == "alert"
    assert buzzer.state()["last_command"] == {
        "command": "play", "args": {"pattern": "alert", "tone_hz": None}, "result": "sounded", "ts": 1234.5}
    buzzer.silence()
    assert history(factory.pin(PIN)) == [0, 1, 0, 1, 0]


def test_buzzer_play_unknown_pattern_lists_known(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    with pytest.raises(ActuatorArgumentError, match=r"unknown buzzer pattern 'siren'; known: alert"):
        buzzer.play("siren")
    assert history(factory.pin(PIN)) == [0]


def test_buzzer_muted_ignores_beep_and_on_and_says_so(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    buzzer.muted = True
    assert buzzer.beep() == {"sounded": False, "reason": "muted"}
    assert buzzer.play("alert") == {"sounded": False, "reason": "muted"}
    assert buzzer.on() == {"sounded": False, "reason": "muted"}
    pin = factory.pin(PIN)
    assert history(pin) == [0]
    state = buzzer.state()
    assert state["muted"] is True and state["beeps"] == 0 and state["active"] is False
    assert state["suppressed"] == 3
    assert state["last_command"]["command"] == "on"
    assert state["last_command"]["result"] == "muted"
    buzzer.muted = False
    buzzer.beep(on_ms=10, wait=True)
    assert history(pin) == [0, 1, 0]


def test_buzzer_muting_silences_running_pattern(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    buzzer.beep(count=20, on_ms=5000, off_ms=5000)
    buzzer.muted = True
    assert history(factory.pin(PIN)) == [0, 1, 0]
    assert buzzer.state()["active"] is False
    assert buzzer.state()["last_command"]["command"] == "mute"


def test_buzzer_muted_rejects_non_bool(buzzer: BuzzerDevice) -> None:
    with pytest.raises(ActuatorArgumentError, match="muted must be True or False"):
        buzzer.muted = "yes"  # type: ignore[assignment]
    assert buzzer.muted is False


def test_buzzer_on_until_off(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    assert buzzer.on() == {"sounded": True, "reason": None}
    assert buzzer.state()["active"] is True
    assert buzzer.state()["pattern"] == "continuous"
    buzzer.off()
    assert history(factory.pin(PIN)) == [0, 1, 0]
    assert buzzer.state()["active"] is False
    assert buzzer.state()["last_command"]["command"] == "off"


def test_buzzer_on_replaces_pattern(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    buzzer.beep(count=20, on_ms=5000, off_ms=5000)
    buzzer.on()
    assert history(factory.pin(PIN)) == [0, 1, 0, 1]
    assert buzzer.state()["pattern"] == "continuous"


@pytest.mark.parametrize("kwargs, message", [
    ({"count": 0}, r"count must be an int in 1\.\.20"),
    ({"count": 21}, r"count must be an int in 1\.\.20"),
    ({"count": True}, r"count must be an int"),
    ({"count": 1.5}, r"count must be an int"),
    ({"on_ms": 9}, r"on_ms must be a number of ms in 10\.\.5000"),
    ({"on_ms": 5001}, r"on_ms must be"),
    ({"on_ms": float("nan")}, r"on_ms must be"),
    ({"on_ms": "100"}, r"on_ms must be"),
    ({"count": 2, "off_ms": 0}, r"off_ms must be a number of ms in 10\.\.5000"),
    ({"off_ms": 5001}, r"off_ms must be"),
    ({"tone_hz": 440}, r"not tonal; tone_hz must be None"),
    ({"on_ms": 10**400}, r"on_ms must be"),  # math.isnan() of it would raise OverflowError
    ({"on_ms": float("inf")}, r"on_ms must be"),
])
def test_buzzer_beep_rejects_bad_arguments(buzzer: BuzzerDevice, factory: MockFactory,
                                           kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ActuatorArgumentError, match=message):
        buzzer.beep(**kwargs)
    assert history(factory.pin(PIN)) == [0]
    assert buzzer.state()["last_command"] is None


def test_buzzer_wait_returns_when_last_beep_ends(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    started = time.monotonic()
    buzzer.beep(count=2, on_ms=10, off_ms=10, wait=True)
    buzzer.beep(count=1, on_ms=10, off_ms=5000, wait=True)
    # No trailing off_ms gap: a waiting caller is not held 5 s after the sound stopped.
    assert time.monotonic() - started < 1.0
    assert history(factory.pin(PIN)) == [0, 1, 0, 1, 0, 1, 0]


def test_buzzer_single_beep_allows_zero_gap(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    buzzer.beep(count=1, on_ms=10, off_ms=0, wait=True)
    assert history(factory.pin(PIN)) == [0, 1, 0]


def test_buzzer_active_low_drives_pin_low_when_on(factory: MockFactory) -> None:
    with BuzzerDevice(PIN, factory, active_high=False) as device:
        device.on()
        device.off()
    assert history(factory.pin(PIN)) == [0, 1, 0, 1, 0]  # idle high, on = low; close releases


def test_buzzer_state_is_plain_types(buzzer: BuzzerDevice) -> None:
    buzzer.beep(count=1, on_ms=10, wait=True)
    state = buzzer.state()
    assert state == json.loads(json.dumps(state))
    assert set(state) >= {"active", "muted", "pattern", "last_command", "beeps"}
    assert state["last_command"] == {
        "command": "beep", "args": {"count": 1, "on_ms": 10, "off_ms": 200, "tone_hz": None},
        "result": "sounded", "ts": 1234.5}


def test_buzzer_close_stops_pattern_and_refuses_commands(factory: MockFactory) -> None:
    device = BuzzerDevice(PIN, factory)
    device.beep(count=20, on_ms=5000, off_ms=5000)
    started = time.monotonic()
    device.close()
    assert time.monotonic() - started < 1.0
    assert history(factory.pin(PIN)) == [0, 1, 0]
    with pytest.raises(DeviceUnavailable, match="closed"):
        device.beep()
    with pytest.raises(DeviceUnavailable, match="closed"):
        device.silence()
    device.close()  # idempotent


def test_buzzer_concurrent_commands_end_quiet(buzzer: BuzzerDevice, factory: MockFactory) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def hammer(kind: int) -> None:
        try:
            start.wait()
            for _ in range(25):
                if kind % 2:
                    buzzer.beep(count=2, on_ms=10, off_ms=10)
                else:
                    buzzer.silence()
        except BaseException as exc:  # recorded, then asserted below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    buzzer.silence()
    assert errors == []
    assert factory.pin(PIN).state == 0
    assert buzzer.state()["active"] is False
    states = history(factory.pin(PIN))
    # The pin only ever alternates; every "on" edge is one counted beep.
    assert all(a != b for a, b in itertools.pairwise(states))
    assert states.count(1.0) == buzzer.state()["beeps"]


def test_buzzer_requires_explicit_pin_factory() -> None:
    with pytest.raises(HalConfigError, match="explicit pin_factory"):
        BuzzerDevice(PIN, None)


def test_buzzer_bad_or_busy_pin_is_config_error(factory: MockFactory) -> None:
    with pytest.raises(HalConfigError, match="GPIO 99"):
        BuzzerDevice(99, factory)
    with BuzzerDevice(PIN, factory), pytest.raises(HalConfigError, match="already in use"):
        BuzzerDevice(PIN, factory)


def test_buzzer_from_halcontext_mock_factory(tmp_path: Path) -> None:
    ctx = HalContext("mock", "pi4", tmp_path)
    try:
        device = BuzzerDevice(PIN, ctx.pin_factory(), tonal=True)
        device.beep(count=1, on_ms=10, wait=True)
        assert history(ctx.pin_factory().pin(PIN)) == [0, 0.5, 0]
        device.close()
    finally:
        ctx.close()


# --- tonal buzzer ---------------------------------------------------------------

@pytest.fixture
def tonal_factory() -> Iterator[MockFactory]:
    pin_factory = MockFactory(pin_class=FrequencyRecordingPin)
    yield pin_factory
    pin_factory.reset()
    pin_factory.close()


@pytest.fixture
def tonal(tonal_factory: MockFactory) -> Iterator[BuzzerDevice]:
    device = BuzzerDevice(PIN, tonal_factory, tonal=True)
    yield device
    device.close()


def test_tonal_beep_plays_requested_tone(tonal: BuzzerDevice, tonal_factory: MockFactory) -> None:
    pin = tonal_factory.pin(PIN)
    pin.frequencies.clear()
    tonal.beep(count=2, on_ms=10, off_ms=10, tone_hz=523.25, wait=True)
    assert history(pin) == [0, 0.5, 0, 0.5, 0]  # 50 % duty while sounding
    assert [f for f in pin.frequencies if f is not None] == [523.25, 523.25]
    assert pin.frequency is None


def test_tonal_default_tone_is_mid_tone(tonal: BuzzerDevice, tonal_factory: MockFactory) -> None:
    tonal.on()
    assert tonal_factory.pin(PIN).frequency == 440.0
    tonal.on(tone_hz=880)
    assert tonal_factory.pin(PIN).frequency == 880.0
    tonal.off()
    assert tonal_factory.pin(PIN).frequency is None


@pytest.mark.parametrize("tone", [219.9, 880.1, 0, -5, True, "440", float("nan"), float("inf"), 10**400])
def test_tonal_rejects_tone_outside_range(tonal: BuzzerDevice, tonal_factory: MockFactory, tone: Any) -> None:
    assert tonal.tone_range == (220.0, 880.0)
    with pytest.raises(ActuatorArgumentError, match=r"tone_hz must be a number in 220\.\.880 Hz"):
        tonal.beep(tone_hz=tone)
    assert history(tonal_factory.pin(PIN)) == [0]


def test_tonal_cannot_be_active_low(tonal_factory: MockFactory) -> None:
    with pytest.raises(HalConfigError, match="active_high"):
        BuzzerDevice(PIN, tonal_factory, tonal=True, active_high=False)


def test_a_mock_mode_nodes_buzzer_pin_keeps_its_recent_states_only(tmp_path: Path) -> None:
    """gpiozero's mock pin keeps every state change; a mock-mode node's buzzer sounding alert
    after alert grew that list for as long as the node ran."""
    from hal.context import NODE_PIN_HISTORY

    ctx = HalContext("mock", "pi4", tmp_path)
    try:
        device = BuzzerDevice(PIN, ctx.pin_factory())
        pin = ctx.pin_factory().pin(PIN)
        for i in range(5 * NODE_PIN_HISTORY):  # as many alerts' beeps, without their 10 ms each
            pin.state = i % 2 == 0
        device.beep(count=2, on_ms=10, off_ms=10, wait=True)
        states = history(pin)
        assert NODE_PIN_HISTORY <= len(states) < 2 * NODE_PIN_HISTORY
        assert states[-6:] == [1, 0, 1, 0, 1, 0]  # the newest kept, in order: the beeps last
        device.close()
    finally:
        ctx.close()
