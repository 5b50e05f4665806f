"""The ADS1115 soil moisture driver and its emulated chip: datasheet codes and config bits,
calibration both ways round, clamping, an unplugged probe, a missing chip, bus errors and
mock mode through the sensor table."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hal import ads1115
from hal.ads1115 import Ads1115Sensor
from hal.emulated.ads1115_chip import EmulatedAds1115, SoilProbe, volts_to_code
from hal.emulated.bus import EmulatedBus
from hal.errors import HalConfigError
from hal.sensor import ADS1115_GAINS, SENSOR_KINDS
from tests.unit.hal_fakes import (
    ChipCtx,
    assert_construction_touches_no_hardware,
    assert_table_row,
    assert_warned_once_and_recovered_once,
    mock_context,
    read_through_kaboom,
)

LSB_4V = 4.096 / 32768  # 125 µV


class Ctx(ChipCtx):
    """An emulated ADS1115 at 0x48 (unless not `chip`), a probe calibrated 20000 dry, 9000 wet on
    AIN0, in soil at 45 %."""

    def __init__(self, tmp_path: Path, chip: bool = True, raw: EmulatedBus | None = None,
                 timing_scale: float = 1.0) -> None:
        super().__init__({"soil_moisture": 45.0}, raw, tmp_path)
        adc = EmulatedAds1115(self.room, clock=self.clock, timing_scale=timing_scale)
        adc.attach_probe(0, SoilProbe.calibrated(20000, 9000, 4.096))
        self.place(0x48, adc, attached=chip)


def sensor(ctx: Ctx, **kwargs) -> Ads1115Sensor:
    kwargs.setdefault("sleep", ctx.sleep)
    return Ads1115Sensor(ctx, "soil", **kwargs)


def with_raw(ctx: Ctx, raw: int, channel: int = 0, gain: float = 4.096) -> None:
    """Put the voltage on AINx that converts to `raw` at this range."""
    ctx.chip.set_input(channel, raw * gain / 32768)


# -- datasheet: output codes and the config register --------------------------------------

@pytest.mark.parametrize("volts, code", [
    (0.0, 0x0000), (LSB_4V, 0x0001), (-LSB_4V, -1),
    (4.096 - LSB_4V, 0x7FFF), (4.096, 0x7FFF), (5.0, 0x7FFF),  # +FS and beyond clip to 7FFFh
    (-4.096, -0x8000), (-5.0, -0x8000),  # -FS and beyond clip to 8000h
])
def test_output_codes_at_4_096_v_one_lsb_is_125_uv(volts: float, code: int) -> None:
    assert volts_to_code(volts, 4.096) == code
    assert ads1115.code_to_volts(1, 4.096) == pytest.approx(125e-6)


def test_conversion_register_is_twos_complement_msb_first() -> None:
    assert ads1115.signed16(0x7F, 0xFF) == 32767
    assert ads1115.signed16(0x00, 0x01) == 1
    assert ads1115.signed16(0xFF, 0xFF) == -1
    assert ads1115.signed16(0x80, 0x00) == -32768


def test_negative_full_scale_through_a_differential_input(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    ctx.chip.set_input(0, 0.0)
    ctx.chip.set_input(1, 3.0)
    ctx.raw.write_i2c_block_data(0x48, 1, [0x85, 0x83])  # reset value: AIN0 - AIN1, ±2.048 V, start
    ctx.clock.advance(1 / 128)
    assert ctx.raw.read_i2c_block_data(0x48, 0, 2) == [0x80, 0x00]


@pytest.mark.parametrize("channel, gain, word", [
    (0, 4.096, 0xC383),  # AIN0/GND, ±4.096 V, single-shot, 128 SPS, comparator off
    (1, 2.048, 0xD583),
    (2, 0.256, 0xEB83),
    (3, 6.144, 0xF183),
    (0, 1.024, 0xC783),
    (1, 0.512, 0xD983),
])
def test_config_words_for_channels_and_gains(channel: int, gain: float, word: int) -> None:
    assert ads1115.config_word(channel, gain) == word


@pytest.mark.parametrize("channel", range(4))
@pytest.mark.parametrize("gain, pga", list(zip(ADS1115_GAINS, (0b000, 0b001, 0b010, 0b011, 0b100, 0b101),
                                                strict=True)))
def test_config_word_fields_follow_the_datasheet_layout(channel: int, gain: float, pga: int) -> None:
    w = ads1115.config_word(channel, gain)
    assert w >> 15 == 1  # OS: start a single conversion
    assert (w >> 12) & 0b111 == 0b100 + channel  # MUX: AINx against GND
    assert (w >> 9) & 0b111 == pga
    assert (w >> 8) & 1 == 1  # MODE: single-shot
    assert (w >> 5) & 0b111 == 0b100  # DR: 128 SPS
    assert w & 0b11111 == 0b00011  # comparator traditional, active low, not latching, disabled


def test_chip_registers_reset_values_read_only_bits_and_the_os_bit(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    bus = ctx.raw
    assert [bus.read_i2c_block_data(0x48, reg, 2) for reg in range(4)] == [
        [0x00, 0x00], [0x85, 0x83], [0x80, 0x00], [0x7F, 0xFF]]
    bus.write_i2c_block_data(0x48, 0, [0x12, 0x34])  # the conversion register is read-only
    assert bus.read_i2c_block_data(0x48, 0, 2) == [0x00, 0x00]
    bus.write_i2c_block_data(0x48, 2, [0x01, 0x02])
    assert bus.read_i2c_block_data(0x48, 2, 2) == [0x01, 0x02]
    with_raw(ctx, 8000)
    bus.write_i2c_block_data(0x48, 1, [0xC3, 0x83])
    assert bus.read_i2c_block_data(0x48, 1, 2) == [0x43, 0x83]  # OS 0: converting
    ctx.clock.advance(1 / 128 - 1e-4)
    assert bus.read_i2c_block_data(0x48, 1, 2)[0] & 0x80 == 0
    assert bus.read_i2c_block_data(0x48, 0, 2) == [0x00, 0x00]  # not yet
    ctx.clock.advance(2e-4)
    assert bus.read_i2c_block_data(0x48, 1, 2) == [0xC3, 0x83]  # done, powered down
    assert bus.read_i2c_block_data(0x48, 0, 2) == [0x1F, 0x40]  # 8000
    ctx.chip.power_cycle()
    assert bus.read_i2c_block_data(0x48, 1, 2) == [0x85, 0x83]


# -- calibration ----------------------------------------------------------------------

@pytest.mark.parametrize("raw, dry, wet, percent", [
    (20000, 20000, 9000, 0.0), (9000, 20000, 9000, 100.0), (14500, 20000, 9000, 50.0),
    (5000, 5000, 25000, 0.0), (25000, 5000, 25000, 100.0), (20000, 5000, 25000, 75.0),
])
def test_calibration_maps_dry_to_0_and_wet_to_100_either_way_round(raw: int, dry: int, wet: int,
                                                                   percent: float) -> None:
    assert ads1115.moisture_percent(raw, dry, wet) == pytest.approx(percent)


@pytest.mark.parametrize("dry, wet, raw, percent", [
    (20000, 9000, 14500, 50.0),  # capacitive: lower when wet
    (5000, 25000, 20000, 75.0),  # resistive: higher when wet
    (20000, 9000, 21000, 0.0),  # drier than the dry point, within the tolerance: clamped
    (20000, 9000, 8000, 100.0),
    (20000, 9000, 22750, 0.0),  # the edge of the 25 % tolerance
    (5000, 25000, 26000, 100.0),
])
def test_sensor_reads_calibrated_and_clamped_values(tmp_path: Path, dry: int, wet: int, raw: int,
                                                    percent: float) -> None:
    ctx = Ctx(tmp_path)
    with_raw(ctx, raw)
    s = sensor(ctx, dry=dry, wet=wet)
    [r] = s.read()
    assert r.ok and r.value == pytest.approx(percent) and r.unit == "%" and s.last_raw == raw
    assert r.node == "pi4" and r.sensor == "soil" and r.quantity == "soil_moisture" and r.ts == ctx.clock.t


@pytest.mark.parametrize("raw", [22751, 6249, 0, -5])
def test_a_raw_value_far_outside_the_span_is_a_failed_reading(tmp_path: Path, raw: int) -> None:
    ctx = Ctx(tmp_path)
    with_raw(ctx, raw)
    [r] = sensor(ctx).read()
    assert r.quality == "unavailable" and r.value is None
    assert f"raw {raw}" in r.reason and "far outside the calibrated span dry 20000 .. wet 9000" in r.reason


def test_an_unplugged_probe_fails_with_a_reason_and_recovers(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    ctx = Ctx(tmp_path)
    s = sensor(ctx)
    with caplog.at_level(logging.INFO, logger="hal.ads1115"):
        assert s.read()[0].value == pytest.approx(45.0, abs=0.01)
        ctx.chip.unplug(0)  # the open input discharges to about 0 V
        for _ in range(3):
            [r] = s.read()
            assert r.quality == "unavailable" and "probe unplugged" in r.reason and "0.000 V" in r.reason
        ctx.chip.unplug(0, floats_to=ctx.chip.vdd)  # or drifts to the rail
        [r] = s.read()
        assert r.quality == "unavailable" and "raw 26400 (3.300 V)" in r.reason
        ctx.chip.plug(0)
        assert s.read()[0].ok
    assert_warned_once_and_recovered_once(caplog, "probe recovered")


def test_an_input_at_full_scale_is_a_failed_reading(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    ctx.chip.unplug(0, floats_to=ctx.chip.vdd)
    [r] = sensor(ctx, gain=2.048, dry=32000, wet=10000).read()
    assert r.quality == "unavailable" and "full-scale limit (raw 32767" in r.reason


# -- faults --------------------------------------------------------------------------

def test_missing_chip_fails_with_a_reason_logged_once_and_recovers(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    ctx = Ctx(tmp_path, chip=False)
    s = sensor(ctx)
    with caplog.at_level(logging.INFO, logger="hal.ads1115"):
        for _ in range(3):
            [r] = s.read()
            assert r.quality == "unavailable" and "0x48" in r.reason and "errno 121" in r.reason
        ctx.raw.attach(0x48, ctx.chip)
        assert s.read()[0].ok
    assert_warned_once_and_recovered_once(caplog)


def test_random_bus_errors_are_retried(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, raw=EmulatedBus(error_rate=0.2, seed=3))
    s = sensor(ctx)
    readings = [s.read()[0] for _ in range(100)]
    assert all(r.ok and r.value == pytest.approx(45.0, abs=0.01) for r in readings)
    assert ctx.raw.errors > 50


def test_a_bus_that_fails_every_transfer_gives_unavailable_readings(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, raw=EmulatedBus(error_rate=1.0, seed=3))
    [r] = sensor(ctx).read()
    assert r.quality == "unavailable" and "failed after 6 tries" in r.reason


def test_flipped_bits_are_outvoted_by_agreeing_reads(tmp_path: Path) -> None:
    # No CRC on this chip: a register counts when two reads agree. A wrong value then needs the
    # same bit flipped twice (about rate^2 / 16 per read); at 2 % per transfer, none in 500.
    ctx = Ctx(tmp_path, raw=EmulatedBus(bitflip_rate=0.02, seed=4))
    s = sensor(ctx)
    readings = [s.read()[0] for _ in range(500)]
    assert ctx.raw.bitflips > 30
    assert all(r.ok and r.value == pytest.approx(45.0, abs=0.01) for r in readings)


class GarbleBus(EmulatedBus):
    """Every block read comes back different."""

    def __init__(self) -> None:
        super().__init__()
        self.garbled = 0

    def read_i2c_block_data(self, i2c_addr, register, length, force=None):
        data = super().read_i2c_block_data(i2c_addr, register, length)
        self.garbled += 1
        return [data[0], data[1] ^ self.garbled]


def test_a_bus_whose_reads_never_agree_gives_a_reason(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, raw=GarbleBus())
    [r] = sensor(ctx).read()
    assert r.quality == "unavailable" and "no two reads agree" in r.reason


def test_a_chip_a_little_slower_than_nominal_is_waited_for(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, timing_scale=1.1)  # the datasheet allows the data rate to be 10 % low
    [r] = sensor(ctx).read()
    assert r.ok


def test_a_conversion_that_never_finishes_fails(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, timing_scale=5.0)
    [r] = sensor(ctx).read()
    assert r.quality == "unavailable" and "conversion not finished" in r.reason


def test_a_chip_reset_during_the_conversion_is_noticed(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    sleep = ctx.sleep

    def reset_while_waiting(dt: float) -> None:
        sleep(dt)
        if len(ctx.slept) == 1:
            ctx.chip.power_cycle()

    s = sensor(ctx, sleep=reset_while_waiting)
    [r] = s.read()
    assert r.quality == "unavailable" and "config register reads 0x8583 while converting 0xc383" in r.reason
    assert s.read()[0].ok


def test_one_read_waits_about_one_conversion_on_the_given_clock(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    before = ctx.clock.t
    assert sensor(ctx).read()[0].ok
    assert ctx.slept and ctx.slept[0] >= 1 / 128
    assert ctx.clock.t - before < 0.012


def test_unexpected_errors_are_logged_and_reported_not_raised(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    _, readings = read_through_kaboom(Ctx(tmp_path), sensor, caplog, "hal.ads1115")
    assert len(readings) == 1


# -- mock mode through the sensor table --------------------------------------------------

def test_mock_mode_reads_back_the_rooms_soil_moisture(tmp_path: Path) -> None:
    ctx, clock = mock_context(tmp_path)
    ctx.room.pin(soil_moisture=37.0)
    s = SENSOR_KINDS["ads1115"].build(ctx, "soil", {})
    assert isinstance(s, Ads1115Sensor)
    chip = ctx.i2c_bus(1).bus.chip(0x48)
    assert isinstance(chip, EmulatedAds1115) and not chip.conversions  # built, not touched
    [r] = s.read()
    assert r.ok and r.value == pytest.approx(37.0, abs=0.01)
    assert chip.conversions[-1].mux == 0b100 and chip.conversions[-1].full_scale == 4.096
    ctx.room.pin(soil_moisture=None)
    for _ in range(5):
        clock.advance(600.0)
        [r] = s.read()
        assert r.ok and r.value == pytest.approx(ctx.room.at(clock.t).soil_moisture, abs=0.02)


def test_mock_mode_sensors_sharing_one_chip_each_get_their_probe(tmp_path: Path) -> None:
    ctx, _ = mock_context(tmp_path)
    ctx.room.pin(soil_moisture=62.5)
    a = SENSOR_KINDS["ads1115"].build(ctx, "bed-a", {})
    b = SENSOR_KINDS["ads1115"].build(ctx, "bed-b", {"channel": 2, "gain": 2.048, "dry": 5000, "wet": 30000})
    other = SENSOR_KINDS["ads1115"].build(ctx, "spare", {"address": 0x49, "channel": 3})
    assert a.read()[0].value == pytest.approx(62.5, abs=0.01)
    assert b.read()[0].value == pytest.approx(62.5, abs=0.01)
    assert other.read()[0].value == pytest.approx(62.5, abs=0.01)
    chip = ctx.i2c_bus(1).bus.chip(0x48)
    assert [chip.has_probe(c) for c in range(4)] == [True, False, True, False]
    assert chip.input_volts(1, 0.0) == 0.0  # an input with nothing on it


# -- construction and closing --------------------------------------------------------

def test_construction_touches_no_hardware(tmp_path: Path) -> None:
    assert_construction_touches_no_hardware(Ctx(tmp_path), sensor)


@pytest.mark.parametrize("kwargs", [{"channel": 4}, {"channel": -1}, {"gain": 3.0}, {"gain": "4.096"},
                                    {"dry": 9000}, {"wet": 40000}, {"address": 0x50}, {"bus": True}])
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(HalConfigError):
        sensor(Ctx(tmp_path), **kwargs)


def test_the_table_row_builds_this_class_with_its_parameters(tmp_path: Path) -> None:
    assert_table_row("ads1115", Ads1115Sensor, tmp_path, [{"dry": 9000}, {"gain": 3.3}], {"channel": 7})


def test_close_makes_later_reads_say_closed(tmp_path: Path) -> None:
    s = sensor(Ctx(tmp_path))
    s.close()
    [r] = s.read()
    assert r.quality == "unavailable" and r.reason == "sensor closed"
