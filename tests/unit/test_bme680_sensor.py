"""The BME680 sensor: readings, unavailability, plausibility, IAQ, lock file and claim line."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.bme680_sensor import Bme680Sensor
from hal.context import NODE_BUS_RECORD, NODE_DEVICE_HISTORY, EmulatedI2CDevice, HalContext, MockSettings
from hal.emulated.bme680_chip import EmulatedBme680
from hal.emulated.bus import EmulatedBus
from hal.errors import HalConfigError
from tests.unit.hal_fakes import (
    ChipCtx,
    FakeClock,
    assert_warned_once_and_recovered_once,
    by_quantity,
    read_through_kaboom,
)

ROOM = {"temperature": 22.4, "humidity": 44.0, "pressure": 1009.5, "gas_resistance": 1.5e5}


class GlitchBus(EmulatedBus):
    """Corrupts the temperature MSB of the field data of chosen measurements (by trigger count)."""

    def __init__(self) -> None:
        super().__init__()
        self.glitches: dict[int, int] = {}  # trigger number -> XOR mask for byte 5
        self.triggers = 0

    def write_byte_data(self, i2c_addr, register, value, force=None):
        if register == 0x74 and value & 0x03 == 0x01:
            self.triggers += 1
        super().write_byte_data(i2c_addr, register, value)

    def read_i2c_block_data(self, i2c_addr, register, length, force=None):
        data = super().read_i2c_block_data(i2c_addr, register, length)
        if register == 0x1D and length == 17 and self.triggers in self.glitches:
            data[5] ^= self.glitches[self.triggers]
        return data


class FakeCtx(ChipCtx):
    """An emulated BME680 at 0x77 (unless not `chip`) in the room at ROOM, and a GPIO pin factory."""

    def __init__(self, tmp_path: Path, chip: bool = True, bus: EmulatedBus | None = None) -> None:
        super().__init__(ROOM, bus, tmp_path)
        self.place(0x77, EmulatedBme680(self.room, clock=self.clock), attached=chip)
        self.factory = MockFactory(pin_class=MockPWMPin)

    def pin_factory(self) -> MockFactory:
        return self.factory


def sensor(ctx: FakeCtx, **kwargs) -> Bme680Sensor:
    kwargs.setdefault("sleep", ctx.sleep)
    return Bme680Sensor(ctx, "env", **kwargs)


def test_read_gives_every_quantity_from_the_room(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    r = by_quantity(sensor(ctx).read())
    assert list(r) == ["temperature", "humidity", "pressure", "gas_resistance", "iaq"]
    for q in ("temperature", "humidity", "pressure"):
        assert r[q].ok and r[q].value == pytest.approx(ROOM[q], abs=0.01), q
    assert r["gas_resistance"].value == pytest.approx(ROOM["gas_resistance"], rel=0.005)
    assert r["iaq"].quality == "calibrating" and 0 <= r["iaq"].value <= 500
    assert {x.node for x in r.values()} == {"pi4"} and {x.sensor for x in r.values()} == {"env"}
    assert r["temperature"].unit == "°C" and r["pressure"].unit == "hPa"


def test_iaq_becomes_ok_after_burn_in_and_persists(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx)
    qualities = []
    for _ in range(40):
        qualities.append(by_quantity(s.read())["iaq"].quality)
        ctx.clock.t += 10.0
    assert qualities[0] == "calibrating" and qualities[-1] == "ok"
    s.close()
    assert (tmp_path / "iaq-env.json").exists()


# -- (f) never raises; unavailable with a reason ----------------------------------------

def test_absent_chip_gives_unavailable_readings_with_reason(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeCtx(tmp_path, chip=False)
    s = sensor(ctx)
    with caplog.at_level(logging.INFO, logger="hal.bme680_sensor"):
        for _ in range(3):
            readings = s.read()
            assert [r.quality for r in readings] == ["unavailable"] * 5
            assert all(r.value is None and "0x77" in r.reason and "errno 121" in r.reason for r in readings)
        ctx.raw.attach(0x77, ctx.chip)  # plugged in
        assert all(r.value is not None for r in s.read()[:4])
    assert_warned_once_and_recovered_once(caplog)


def test_unexpected_errors_are_logged_and_reported_not_raised(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    _, readings = read_through_kaboom(FakeCtx(tmp_path), sensor, caplog, "hal.bme680_sensor")
    assert len(readings) == 5


def test_closed_sensor_reports_closed(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx)
    s.read()
    s.close()
    assert {r.reason for r in s.read()} == {"sensor closed"}


def test_cold_heater_makes_gas_and_iaq_unavailable_only(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    r = by_quantity(sensor(ctx, heater_ms=5).read())
    assert r["temperature"].ok and r["humidity"].ok and r["pressure"].ok
    assert r["gas_resistance"].quality == "unavailable" and "heater" in r["gas_resistance"].reason
    assert r["iaq"].quality == "unavailable"


@pytest.mark.parametrize("kwargs", [{"heater_temp": 500}, {"address": 0x50}, {"bus": -1},
                                    {"claim_gpio": -2}, {"heater_ms": 5000}])
def test_bad_configuration_is_rejected_at_construction(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(HalConfigError):
        sensor(FakeCtx(tmp_path), **kwargs)


def test_works_with_the_real_mock_mode_context(tmp_path: Path) -> None:
    clock = FakeClock()
    ctx = HalContext("mock", "pizero", tmp_path, clock=clock,
                     mock=MockSettings(i2c_devices=[EmulatedI2CDevice(1, 0x76, "bme688")]))
    ctx.room.pin(**ROOM)
    r = by_quantity(Bme680Sensor(ctx, "env", address=0x76, sleep=clock.sleep).read())
    assert r["temperature"].value == pytest.approx(ROOM["temperature"], abs=0.01)
    assert r["gas_resistance"].value == pytest.approx(ROOM["gas_resistance"], rel=0.005)
    raw = ctx.i2c_bus(1).bus  # a node's emulated devices remember only their last few operations
    assert raw.transactions > 0 and raw.record.maxlen == NODE_BUS_RECORD
    [chip] = raw._chips.values()
    assert len(chip.measurements) == 1 and chip.measurements.maxlen == NODE_DEVICE_HISTORY
    assert ctx.sysfs().history.maxlen == NODE_DEVICE_HISTORY
    ctx.close()


# -- plausibility: rate of change, re-measure once ---------------------------------------

def test_single_glitch_is_rejected_and_remeasured(tmp_path: Path) -> None:
    bus = GlitchBus()
    ctx = FakeCtx(tmp_path, bus=bus)
    s = sensor(ctx)
    s.read()
    bus.glitches[bus.triggers + 1] = 0x10  # +16 × 2**12 counts: a jump of ~20 °C in both reads
    ctx.clock.t += 1.0
    r = by_quantity(s.read())
    assert r["temperature"].value == pytest.approx(ROOM["temperature"], abs=0.01)
    assert s.stats["jumps_rejected"] == 1 and s.stats["jumps_confirmed"] == 0


def test_genuine_step_is_confirmed_by_the_second_measurement(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx)
    s.read()
    ctx.room.pin(temperature=ROOM["temperature"] + 8.0)  # a heater switched on next to it
    ctx.clock.t += 1.0
    r = by_quantity(s.read())
    assert r["temperature"].value == pytest.approx(ROOM["temperature"] + 8.0, abs=0.01)
    assert s.stats["jumps_rejected"] == 1 and s.stats["jumps_confirmed"] == 1


def test_unconfirmed_jump_is_unavailable(tmp_path: Path) -> None:
    bus = GlitchBus()
    ctx = FakeCtx(tmp_path, bus=bus)
    s = sensor(ctx)
    s.read()
    bus.glitches[bus.triggers + 1] = 0x10
    bus.glitches[bus.triggers + 2] = 0x20
    ctx.clock.t += 1.0
    readings = s.read()
    assert all(r.quality == "unavailable" and "temperature jumped" in r.reason for r in readings)
    ctx.clock.t += 1.0
    assert by_quantity(s.read())["temperature"].value == pytest.approx(ROOM["temperature"], abs=0.01)


def test_slow_drift_over_a_long_gap_is_accepted(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx)
    s.read()
    ctx.room.pin(temperature=ROOM["temperature"] + 12.0)
    ctx.clock.t += 3600.0  # an hour later the previous value is no reference
    assert by_quantity(s.read())["temperature"].value == pytest.approx(ROOM["temperature"] + 12.0, abs=0.01)
    assert s.stats["jumps_rejected"] == 0


# -- coordination: lock file and claim line ---------------------------------------------

def test_lock_file_held_elsewhere_gives_unavailable_then_recovers(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx, lock_file="bme680.lock", lock_timeout=0.5)
    with open(tmp_path / "bme680.lock", "a+") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        start = ctx.clock()
        readings = s.read()
        assert all(r.quality == "unavailable" and "held by another process" in r.reason for r in readings)
        assert ctx.clock() - start == pytest.approx(0.5, abs=0.02)  # its bounded wait, on the fake clock
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    assert by_quantity(s.read())["temperature"].ok


def test_lock_is_held_during_the_measurement_only(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx, lock_file=str(tmp_path / "abs.lock"))
    held: list[bool] = []

    def probe(dt: float) -> None:
        with open(tmp_path / "abs.lock", "a+") as other:
            try:
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(other.fileno(), fcntl.LOCK_UN)
                held.append(False)
            except BlockingIOError:
                held.append(True)

    ctx.clock.on_sleep.append(probe)
    s.read()
    ctx.clock.on_sleep.clear()
    assert held and all(held)  # every sleep (reset, heater wait) happened under the lock
    probe(0)
    assert held[-1] is False


def test_claim_line_is_high_only_while_measuring(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx, claim_gpio=17)
    pin = ctx.factory.pin(17)
    levels: list[bool] = []
    ctx.clock.on_sleep.append(lambda dt: levels.append(bool(pin.state)))
    s.read()
    assert levels and all(levels[1:])  # the first sleep is the reset during init, before claiming
    assert not pin.state and pin.function == "input"
    assert [bool(st.state) for st in pin.states][-2:] == [True, False]


def test_claim_line_waits_for_the_other_board(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx, claim_gpio=17)
    s.read()
    pin = ctx.factory.pin(17)
    pin.drive_high()  # the other board is measuring
    polls: list[float] = []

    def other_board_finishes(dt: float) -> None:
        polls.append(dt)
        if len(polls) == 5:
            pin.drive_low()

    ctx.clock.on_sleep.append(other_board_finishes)
    r = by_quantity(s.read())
    assert r["temperature"].ok
    assert polls[:5] == [0.01] * 5 and s._claim is not None and s._claim.waits == 1
    assert s._claim.timeouts == 0


def test_claim_line_held_for_ever_does_not_block(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeCtx(tmp_path)
    s = sensor(ctx, claim_gpio=17, claim_timeout=0.2)
    s.read()
    ctx.factory.pin(17).drive_high()
    with caplog.at_level(logging.WARNING, logger="hal.bme680_sensor"):
        r = by_quantity(s.read())
    assert r["temperature"].ok and s._claim is not None and s._claim.timeouts == 1
    assert any("claim line held" in rec.getMessage() for rec in caplog.records)
