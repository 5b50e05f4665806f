"""Fakes and checks the sensor driver tests share (BH1750, SHT4x, DS18B20, SCD4x, ADS1115, BME680).

Every driver's tests need time that moves only when the driver sleeps, the parts of HalContext
an I2C driver uses around one emulated chip, a mock-mode HalContext on that time, and the same
checks of what hal.driver.SensorDriver promises (an unexpected error is logged and reported,
a failure streak is logged once, construction touches no hardware): written once here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from hal.context import HalContext
from hal.emulated.bus import EmulatedBus
from hal.emulated.environment import RoomSimulator
from hal.errors import HalConfigError
from hal.i2c import RetryingBus
from hal.readings import Reading
from hal.sensor import SENSOR_KINDS
from tests.clocks import ManualClock

NODE = "pi4"


class FakeClock(ManualClock):
    """Time that moves only when something sleeps; `on_sleep` hooks run after each sleep."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        super().__init__(t)
        self.on_sleep: list[Callable[[float], object]] = []

    def sleep(self, dt: float) -> None:
        self.t += dt
        for hook in list(self.on_sleep):
            hook(dt)


class ChipCtx:
    """The parts of HalContext an I2C driver uses, on fake time: a room pinned to `room`, an
    emulated bus behind a RetryingBus, and `sleep` (the bus's retries wait with it too), which
    records each wait in `slept` and moves the clock. A subclass puts its chip in with place()."""

    def __init__(self, room: dict[str, float], raw: EmulatedBus | None = None,
                 state_dir: Path | None = None) -> None:
        self.node = NODE
        self.clock = FakeClock()
        self.state_dir = state_dir
        self.room = RoomSimulator(seed=2)
        self.room.pin(**room)
        self.raw = raw or EmulatedBus()
        self.bus = RetryingBus(self.raw, sleep=self.sleep)
        self.slept: list[float] = []
        self.chip: Any = None

    def place(self, address: int, chip: Any, attached: bool = True) -> None:
        """The chip under test; on the bus at `address` unless not `attached` (a missing chip)."""
        self.chip = chip
        if attached:
            self.raw.attach(address, chip)

    def sleep(self, dt: float) -> None:
        self.slept.append(dt)
        self.clock.sleep(dt)

    def i2c_bus(self, number: int) -> RetryingBus:
        return self.bus


def mock_context(tmp_path: Path, **room: float) -> tuple[HalContext, FakeClock]:
    """A mock-mode HalContext on fake time (the drivers it builds wait with its sleep), the room pinned."""
    clock = FakeClock()
    ctx = HalContext("mock", NODE, tmp_path, clock=clock, sleep=clock.sleep)
    if room:
        ctx.room.pin(**room)
    return ctx, clock


def by_quantity(readings: list[Reading]) -> dict[str, Reading]:
    return {r.quantity: r for r in readings}


def one(readings: list[Reading], **expected: object) -> Reading:
    """The only reading, with the attributes given."""
    [r] = readings
    assert {k: getattr(r, k) for k in expected} == expected
    return r


def kaboom(*args: object) -> NoReturn:
    """Stands in for a context method (i2c_bus, sysfs) failing in a way no driver expects."""
    raise RuntimeError("kaboom")


def read_through_kaboom(ctx: Any, build: Callable[[Any], Any], caplog: pytest.LogCaptureFixture, logger: str,
                        method: str = "i2c_bus") -> tuple[Any, list[Reading]]:
    """The sensor `build(ctx)` and what it read with the context's `method` broken by kaboom: the
    error logged with its traceback, every reading unavailable with it as the reason."""
    setattr(ctx, method, kaboom)
    sensor = build(ctx)
    with caplog.at_level(logging.ERROR, logger=logger):
        readings = sensor.read()
    assert readings and all(r.quality == "unavailable" and "RuntimeError: kaboom" in r.reason for r in readings)
    assert any(r.exc_info for r in caplog.records)
    return sensor, readings


def assert_warned_once_and_recovered_once(caplog: pytest.LogCaptureFixture, recovered: str = "recovered") -> None:
    """A failure streak is one warning, and its end one line saying `recovered`."""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    recoveries = [r for r in caplog.records if recovered in r.getMessage()]
    assert len(warnings) == 1 and len(recoveries) == 1


def assert_construction_touches_no_hardware(ctx: ChipCtx, build: Callable[[Any], Any]) -> Any:
    """`build(ctx)` asks for no bus and sends nothing; the sensor's first read does. The sensor."""
    calls: list[int] = []

    def i2c_bus(number: int) -> RetryingBus:
        calls.append(number)
        return ctx.bus

    ctx.i2c_bus = i2c_bus  # type: ignore[method-assign]
    sensor = build(ctx)
    assert calls == [] and ctx.raw.transactions == 0
    sensor.read()
    assert calls
    return sensor


def assert_table_row(kind: str, cls: type, tmp_path: Path, refused: Iterable[dict[str, Any]],
                     build_refused: dict[str, Any]) -> None:
    """The sensor table's row loads `cls` with its quantities, its rules refuse each of `refused`,
    and building with `build_refused` raises HalConfigError."""
    row = SENSOR_KINDS[kind]
    assert row.load() is cls and row.quantities == cls.quantities  # type: ignore[attr-defined]
    for params in refused:
        assert row.problems(params), params
    with pytest.raises(HalConfigError):
        row.build(HalContext("mock", NODE, tmp_path), kind, build_refused)
