"""BH1750: datasheet conversion, the three one-time modes, saturation, faults, the emulated chip."""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

import pytest

from hal.bh1750 import Bh1750Sensor, counts_to_lux, mtreg_commands
from hal.emulated.bh1750_chip import EmulatedBh1750
from hal.emulated.bus import EmulatedBus
from hal.emulated.environment import RoomSimulator
from hal.errors import HalConfigError
from hal.sensor import SENSOR_KINDS
from tests.unit.hal_fakes import (
    ChipCtx,
    FakeClock,
    assert_construction_touches_no_hardware,
    assert_warned_once_and_recovered_once,
    mock_context,
    one,
    read_through_kaboom,
)


class Ctx(ChipCtx):
    """An emulated BH1750 at 0x23 (unless not `chip`) in a room lit to `lux`."""

    def __init__(self, chip: bool = True, bus: EmulatedBus | None = None, lux: float = 333.3) -> None:
        super().__init__({"illuminance": lux}, bus)
        self.place(0x23, EmulatedBh1750(self.room, clock=self.clock), attached=chip)


def sensor(ctx: Ctx, **kwargs: object) -> Bh1750Sensor:
    kwargs.setdefault("sleep", ctx.sleep)
    return Bh1750Sensor(ctx, "light", **kwargs)  # type: ignore[arg-type]


def only(readings: list) -> object:
    return one(readings, quantity="illuminance", sensor="light")


# -- datasheet -------------------------------------------------------------------------

def test_datasheet_example_conversion() -> None:
    # BH1750FVI datasheet, measurement sequence example: 1000_0011_1001_0000 = 33680 -> 28067 lx
    assert counts_to_lux(0x8390) == pytest.approx(28067, abs=0.5)
    assert counts_to_lux(0x8390, "high2") == pytest.approx(28067 / 2, abs=0.5)
    assert counts_to_lux(0x8390, "low") == counts_to_lux(0x8390)
    assert counts_to_lux(600, mtreg=138) == 250.0  # twice the time, twice the counts


def test_mtreg_opcodes() -> None:
    assert mtreg_commands(69) == (0x42, 0x65)  # 0b010_00101
    assert mtreg_commands(31) == (0x40, 0x7F) and mtreg_commands(254) == (0x47, 0x7E)


@pytest.mark.parametrize(("resolution", "opcode", "wait"), [("high", 0x20, 0.18), ("high2", 0x21, 0.18),
                                                            ("low", 0x23, 0.024)])
def test_each_resolution_measures_the_room(resolution: str, opcode: int, wait: float) -> None:
    ctx = Ctx(lux=333.3)
    waits: list[float] = []

    def sleep(dt: float) -> None:
        waits.append(dt)
        ctx.clock.sleep(dt)

    r = only(sensor(ctx, resolution=resolution, sleep=sleep).read())
    assert r.ok and r.value == pytest.approx(333.33, abs=0.01) and r.unit == "lx"
    assert waits == [pytest.approx(wait)]
    writes = [t.data for t in ctx.raw.record if t.kind == "write"]
    assert writes == [(0x01,), (0x42,), (0x65,), (opcode,)]
    [m] = ctx.chip.measurements
    assert m.counts == (800 if resolution == "high2" else 400)
    assert not ctx.chip.powered  # a one-time measurement powers the chip down


def test_resolutions_have_their_steps() -> None:
    values = {}
    for resolution in ("high", "high2", "low"):
        ctx = Ctx(lux=100.3)
        values[resolution] = only(sensor(ctx, resolution=resolution).read()).value
    assert values["high"] == pytest.approx(100.0, abs=0.01)  # 120 counts
    assert values["high2"] == pytest.approx(100.42, abs=0.01)  # 241 half counts
    assert values["low"] == pytest.approx(100.0, abs=0.01)  # 120, a multiple of 4


def test_the_datasheet_example_end_to_end() -> None:
    ctx = Ctx(lux=33680 / 1.2)
    assert only(sensor(ctx).read()).value == pytest.approx(28066.67, abs=0.01)
    assert ctx.chip.data == 0x8390


# -- saturation ------------------------------------------------------------------------

def test_saturation_is_unavailable_not_the_top_of_the_range() -> None:
    r = only(sensor(Ctx(lux=60_000)).read())
    assert r.quality == "unavailable" and r.reason.startswith("saturated: brighter than 54612 lx")


def test_mode_two_saturates_at_half_and_says_what_reaches_further() -> None:
    r = only(sensor(Ctx(lux=30_000), resolution="high2").read())
    assert "saturated" in r.reason and "27306 lx" in r.reason and 'resolution = "high"' in r.reason
    assert only(sensor(Ctx(lux=30_000)).read()).value == pytest.approx(30_000, abs=1)


# -- faults ----------------------------------------------------------------------------

def test_missing_chip_is_no_ack_logged_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    ctx = Ctx(chip=False)
    s = sensor(ctx)
    with caplog.at_level(logging.INFO, logger="hal.bh1750"):
        for _ in range(3):
            r = only(s.read())
            assert r.quality == "unavailable"
            assert r.reason.startswith("no ACK from 0x23 on bus 1 (power-on command 0x01)")
        ctx.raw.attach(0x23, ctx.chip)
        assert only(s.read()).ok
    assert_warned_once_and_recovered_once(caplog)


def test_transient_bus_errors_are_retried_away() -> None:
    ctx = Ctx(bus=EmulatedBus(error_rate=0.3, seed=5))
    s = sensor(ctx)
    assert all(only(s.read()).ok for _ in range(20))
    assert ctx.bus.stats["retries"] > 0


def test_a_bus_that_always_fails_gives_a_reading_with_the_reason() -> None:
    r = only(sensor(Ctx(bus=EmulatedBus(error_rate=1.0))).read())
    assert r.quality == "unavailable" and "failed after 6 tries" in r.reason


def test_mtreg_changed_by_another_master_is_set_back() -> None:
    ctx = Ctx(lux=333.3)
    ctx.chip.command([0x47, 0x7E])  # MTreg 254, as another board's driver might leave it
    assert only(sensor(ctx).read()).value == pytest.approx(333.33, abs=0.01)
    assert ctx.chip.measurements[-1].mtreg == 69


def test_unexpected_errors_and_close_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    s, readings = read_through_kaboom(Ctx(), sensor, caplog, "hal.bh1750")
    only(readings)
    s.close()
    assert only(s.read()).reason == "sensor closed"


@pytest.mark.parametrize("kwargs", [{"address": 0x44}, {"resolution": "ultra"}, {"bus": -1}, {"bus": True}])
def test_bad_configuration_is_refused(kwargs: dict) -> None:
    with pytest.raises(HalConfigError):
        sensor(Ctx(), **kwargs)


def test_construction_touches_no_hardware() -> None:
    assert_construction_touches_no_hardware(Ctx(chip=False), sensor)


def test_works_without_smbus2_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smbus2", None)
    assert only(sensor(Ctx()).read()).ok


def test_mock_mode_builds_from_the_sensor_table(tmp_path: Path) -> None:
    ctx, _ = mock_context(tmp_path, illuminance=1234.5)  # the sensor waits on ctx.sleep
    s = SENSOR_KINDS["bh1750"].build(ctx, "light", {"address": 0x5C, "resolution": "high2"})
    assert isinstance(s, Bh1750Sensor) and (s.kind, s.quantities) == ("bh1750", ("illuminance",))
    assert only(s.read()).value == pytest.approx(1234.5, abs=0.25)
    assert isinstance(ctx.i2c_bus(1).bus.chip(0x5C), EmulatedBh1750)
    ctx.close()


# -- the emulated chip -----------------------------------------------------------------

@pytest.fixture
def chip() -> EmulatedBh1750:
    room = RoomSimulator()
    room.pin(illuminance=500.0)
    return EmulatedBh1750(room, clock=FakeClock())


def test_emulated_chip_reads_zero_before_any_measurement(chip: EmulatedBh1750) -> None:
    assert not chip.powered and chip.read_raw(2) == [0, 0]
    chip.command([0x01])
    assert chip.read_raw(2) == [0, 0]


def test_emulated_chip_gives_the_old_value_until_the_measurement_ends(chip: EmulatedBh1750) -> None:
    chip.command([0x20])
    assert chip.read_raw(2) == [0, 0] and chip.measuring  # never a NACK, just the old register
    chip.clock.sleep(0.119)
    assert chip.read_raw(2) == [0, 0]
    chip.clock.sleep(0.0015)
    assert chip.read_raw(2) == [0x02, 0x58] and not chip.measuring and not chip.powered  # 600 counts
    chip.room.pin(illuminance=250.0)
    chip.command([0x20])
    assert chip.read_raw(2) == [0x02, 0x58]


def test_emulated_reset_works_only_when_powered_on(chip: EmulatedBh1750) -> None:
    chip.command([0x23])
    chip.clock.sleep(0.017)
    assert chip.data == 600 and not chip.powered
    chip.command([0x07])
    assert chip.data == 600  # powered down: ignored
    chip.command([0x01, 0x07])
    assert chip.data == 0


def test_emulated_continuous_mode_keeps_measuring(chip: EmulatedBh1750) -> None:
    chip.command([0x10])
    chip.clock.sleep(0.121)
    assert chip.data == 600 and chip.powered
    chip.room.pin(illuminance=1000.0)
    chip.clock.sleep(1.0)
    assert chip.read_raw(2) == [0x04, 0xB0]  # 1200
    chip.command([0x00])
    chip.room.pin(illuminance=10.0)
    chip.clock.sleep(1.0)
    assert chip.data == 1200 and not chip.measuring


def test_emulated_mtreg_scales_time_and_counts(chip: EmulatedBh1750) -> None:
    chip.command([*mtreg_commands(138), 0x20])
    chip.clock.sleep(0.239)
    assert chip.data == 0
    chip.clock.sleep(0.0015)
    assert chip.data == 1200 and counts_to_lux(chip.data, mtreg=138) == 500.0


def test_emulated_chip_nacks_unknown_opcodes(chip: EmulatedBh1750) -> None:
    with pytest.raises(OSError) as info:
        chip.command([0x30])
    assert info.value.errno == errno.EREMOTEIO and chip.nacks == 1
