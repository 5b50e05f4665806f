"""The SCD4x driver and its emulated chip: datasheet vectors, the idle/periodic state machine,
start-up in mock mode, polling faster than the chip measures, CRC errors, a missing chip,
power loss and bus errors."""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

import pytest
from smbus2 import i2c_msg

from hal import scd4x
from hal.crc import sensirion_crc8
from hal.emulated.bus import EmulatedBus
from hal.emulated.scd4x_chip import EmulatedScd4x
from hal.errors import BusError, HalConfigError
from hal.readings import Reading
from hal.scd4x import Scd4xSensor
from hal.sensor import SENSOR_KINDS
from tests.unit.hal_fakes import (
    ChipCtx,
    assert_construction_touches_no_hardware,
    assert_table_row,
    assert_warned_once_and_recovered_once,
    by_quantity,
    mock_context,
    read_through_kaboom,
)

ROOM = {"co2": 812.4, "temperature": 21.5, "humidity": 40.0}
START_SEQUENCE = [scd4x.STOP_PERIODIC, scd4x.SET_TEMPERATURE_OFFSET, scd4x.SET_SENSOR_ALTITUDE,
                  scd4x.GET_SERIAL, scd4x.START_PERIODIC]


class Ctx(ChipCtx):
    """An emulated SCD4x at 0x62 (unless not `chip`) in the room at ROOM."""

    def __init__(self, tmp_path: Path, chip: bool = True, raw: EmulatedBus | None = None) -> None:
        super().__init__(ROOM, raw, tmp_path)
        self.place(0x62, EmulatedScd4x(self.room, clock=self.clock), attached=chip)


def sensor(ctx: Ctx, **kwargs) -> Scd4xSensor:
    kwargs.setdefault("sleep", ctx.sleep)
    return Scd4xSensor(ctx, "co2", **kwargs)


def poll(s: Scd4xSensor, ctx: Ctx, seconds: float, every: float) -> list[tuple[float, float, dict[str, Reading]]]:
    """Read every `every` s for `seconds`: (time before, how long the read took, readings)."""
    out = []
    end = ctx.clock.t + seconds
    while ctx.clock.t < end:
        before = ctx.clock.t
        readings = by_quantity(s.read())
        out.append((before, ctx.clock.t - before, readings))
        ctx.clock.advance(every)
    return out


def started(ctx: Ctx, **kwargs) -> Scd4xSensor:
    """A sensor whose first measurement has been read."""
    s = sensor(ctx, **kwargs)
    s.read()
    ctx.clock.advance(scd4x.INTERVAL_S)
    assert by_quantity(s.read())["co2"].ok
    return s


def codes(chip: EmulatedScd4x) -> list[int]:
    return [code for _, code, _ in chip.commands]


# -- datasheet vectors ------------------------------------------------------------------

def test_crc_vector_from_the_datasheet() -> None:
    assert sensirion_crc8([0xBE, 0xEF]) == 0x92
    assert scd4x.encode_word(0xBEEF) == [0xBE, 0xEF, 0x92]


def test_read_measurement_example_decodes_to_500_ppm_25_c_37_percent() -> None:
    data = [0x01, 0xF4, 0x33, 0x66, 0x67, 0xA2, 0x5E, 0xB9, 0x3C]
    words = scd4x.decode_words(data, "read_measurement")
    assert words == [0x01F4, 0x6667, 0x5EB9]
    co2, temperature, humidity = scd4x.decode_measurement(words)
    assert co2 == 500
    assert temperature == pytest.approx(25.0, abs=0.01)
    assert humidity == pytest.approx(37.0, abs=0.01)


def test_serial_number_example() -> None:
    hi, mid, lo = scd4x.decode_words([0xF8, 0x96, 0x31, 0x9F, 0x07, 0xC2, 0x3B, 0xBE, 0x89], "serial")
    assert (hi << 32) | (mid << 16) | lo == 273325796834238


def test_temperature_offset_and_altitude_words() -> None:
    # 4 °C, the default: 4 * 65535 / 175 = 1497.9 -> 1498 (Sensirion's driver example value)
    assert scd4x.temperature_offset_word(4.0) == 0x05DA == 1498
    # the datasheet's set_temperature_offset example: 5.4 °C -> 0x07E6, CRC 0x48
    assert scd4x.encode_word(scd4x.temperature_offset_word(5.4)) == [0x07, 0xE6, 0x48]
    # get_temperature_offset example: 0x0912 (CRC 0x63) is 6.2 °C
    assert scd4x.decode_words([0x09, 0x12, 0x63], "offset") == [0x0912]
    offset_c = 175 * 0x0912 / 65535
    assert offset_c == pytest.approx(6.2, abs=0.01)
    # set_sensor_altitude example: 1950 m -> 0x079E, CRC 0x09
    assert scd4x.encode_word(1950) == [0x07, 0x9E, 0x09]


@pytest.mark.parametrize("word, ready", [
    (0x0000, False), (0x8000, False), (0xF800, False),  # the high 5 bits say nothing
    (0x0001, True), (0x0400, True), (0x07FF, True), (0x8006, True),
])
def test_data_ready_looks_at_the_low_11_bits(word: int, ready: bool) -> None:
    assert scd4x.data_ready(word) is ready


def test_a_word_with_a_bad_crc_is_named() -> None:
    with pytest.raises(BusError, match=r"CRC mismatch in word 1 of read_measurement: 0x6667 came with CRC 0xa3"):
        scd4x.decode_words([0x01, 0xF4, 0x33, 0x66, 0x67, 0xA3, 0x5E, 0xB9, 0x3C], "read_measurement")


# -- the emulated chip -------------------------------------------------------------------

def send(bus: EmulatedBus, code: int, word: int | None = None) -> None:
    data = [code >> 8, code & 0xFF] + ([] if word is None else scd4x.encode_word(word))
    bus.i2c_rdwr(i2c_msg.write(0x62, data))


def fetch(bus: EmulatedBus, n: int) -> list[int]:
    msg = i2c_msg.read(0x62, n)
    bus.i2c_rdwr(msg)
    return list(msg)


def nacked(bus: EmulatedBus, code: int, word: int | None = None) -> bool:
    try:
        send(bus, code, word)
    except OSError as exc:
        assert exc.errno == errno.EREMOTEIO
        return True
    return False


def test_chip_refuses_configuration_while_measuring_and_for_500_ms_after_stop(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    bus = ctx.raw
    send(bus, scd4x.SET_TEMPERATURE_OFFSET, 0x05DA)  # idle: accepted
    send(bus, scd4x.START_PERIODIC)
    assert ctx.chip.measuring
    for code, word in ((scd4x.SET_TEMPERATURE_OFFSET, 0x0100), (scd4x.SET_SENSOR_ALTITUDE, 100),
                       (scd4x.GET_SERIAL, None), (scd4x.REINIT, None), (scd4x.START_PERIODIC, None)):
        assert nacked(bus, code, word), hex(code)
    assert ctx.chip.offset_word == 0x05DA and ctx.chip.altitude == 0
    assert not nacked(bus, scd4x.GET_DATA_READY)  # allowed while measuring
    send(bus, scd4x.STOP_PERIODIC)
    ctx.clock.advance(0.499)
    assert nacked(bus, scd4x.SET_SENSOR_ALTITUDE, 100)
    ctx.clock.advance(0.002)
    assert not nacked(bus, scd4x.SET_SENSOR_ALTITUDE, 100)
    assert ctx.chip.altitude == 100 and not ctx.chip.measuring


def test_chip_measures_every_5_s_and_each_measurement_reads_once(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    bus = ctx.raw
    send(bus, scd4x.START_PERIODIC)

    def ready() -> bool:
        send(bus, scd4x.GET_DATA_READY)
        ctx.clock.advance(0.001)
        return scd4x.data_ready(scd4x.decode_words(fetch(bus, 3), "ready")[0])

    assert not ready()
    ctx.clock.advance(4.9)
    assert not ready()
    ctx.clock.advance(0.1)
    assert ready()
    send(bus, scd4x.READ_MEASUREMENT)
    ctx.clock.advance(0.001)
    co2, t, rh = scd4x.decode_measurement(scd4x.decode_words(fetch(bus, 9), "m"))
    assert co2 == 812 and t == pytest.approx(21.5, abs=0.01) and rh == pytest.approx(40.0, abs=0.01)
    assert not ready()
    send(bus, scd4x.READ_MEASUREMENT)  # the buffer is empty: the read is NACKed
    ctx.clock.advance(0.001)
    with pytest.raises(OSError) as info:
        fetch(bus, 9)
    assert info.value.errno == errno.EREMOTEIO


def test_chip_nacks_unknown_commands_bad_crc_reads_with_nothing_and_early_reads(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    bus = ctx.raw
    assert nacked(bus, 0x1234)
    with pytest.raises(OSError):
        bus.i2c_rdwr(i2c_msg.write(0x62, [0x24, 0x1D, 0x05, 0xDA, 0x00]))  # CRC should be 0x29
    assert ctx.chip.offset_word == 0x05DA  # unchanged default
    with pytest.raises(OSError):
        fetch(bus, 3)  # nothing asked
    send(bus, scd4x.GET_SERIAL)
    with pytest.raises(OSError):
        fetch(bus, 9)  # before its 1 ms execution time


def test_chip_power_cycle_nacks_for_a_second_then_is_idle_with_factory_settings(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    bus = ctx.raw
    send(bus, scd4x.SET_TEMPERATURE_OFFSET, 0x07E6)
    send(bus, scd4x.START_PERIODIC)
    ctx.chip.power_cycle()
    assert nacked(bus, scd4x.GET_DATA_READY)
    ctx.clock.advance(1.0)
    assert not ctx.chip.measuring and ctx.chip.offset_word == 0x05DA
    assert not nacked(bus, scd4x.GET_SERIAL)


# -- start-up, in mock mode through the sensor table -------------------------------------

def test_mock_mode_start_up_sequence_and_first_measurement(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    ctx, clock = mock_context(tmp_path, **ROOM)
    t0 = clock.t
    s = SENSOR_KINDS["scd4x"].build(ctx, "co2", {})
    assert isinstance(s, Scd4xSensor)
    chip = ctx.i2c_bus(1).bus.chip(0x62)
    assert isinstance(chip, EmulatedScd4x) and not chip.commands  # built, not touched
    with caplog.at_level(logging.INFO, logger="hal.scd4x"):
        first = by_quantity(s.read())
    assert codes(chip)[:5] == START_SEQUENCE
    assert chip.commands[1][2] == (0x05, 0xDA, 0x29) and chip.commands[2][2] == (0x00, 0x00, 0x81)
    assert chip.measuring and s.serial == 273325796834238
    assert clock.t - t0 == pytest.approx(0.504, abs=0.001)  # 500 ms after stop, 1 ms per set/get
    assert all(r.quality == "unavailable" and "first result due in 5.0 s" in r.reason for r in first.values())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # starting is no fault
    clock.advance(5.0)
    r = by_quantity(s.read())
    assert [q for q in r] == ["co2", "temperature", "humidity"]
    assert all(x.ok and x.node == "pi4" and x.sensor == "co2" and x.ts == clock.t for x in r.values())
    assert r["co2"].value == 812.0 and r["co2"].unit == "ppm"  # quantised to 1 ppm
    assert r["temperature"].value == pytest.approx(21.5, abs=0.01)  # 4 °C offset takes off 4 °C of self-heating
    assert r["humidity"].value == pytest.approx(40.0, abs=0.01)


def test_mock_mode_sends_the_configured_offset_and_altitude(tmp_path: Path) -> None:
    ctx, clock = mock_context(tmp_path, **ROOM)
    s = SENSOR_KINDS["scd4x"].build(ctx, "co2", {"altitude": 1950, "temperature_offset": 5.4})
    s.read()
    chip = ctx.i2c_bus(1).bus.chip(0x62)
    assert chip.offset_word == 0x07E6 and chip.altitude == 1950
    clock.advance(5.0)
    # the chip heats itself by 4 °C; taking off 5.4 reads 1.4 °C below the room
    assert by_quantity(s.read())["temperature"].value == pytest.approx(21.5 - 1.4, abs=0.01)


def test_mock_mode_runs_without_smbus2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smbus2", None)  # `import smbus2` raises ImportError
    ctx, clock = mock_context(tmp_path, **ROOM)
    s = SENSOR_KINDS["scd4x"].build(ctx, "co2", {})
    s.read()
    clock.advance(5.0)
    assert all(r.ok for r in s.read())


def test_a_chip_left_measuring_by_an_earlier_process_is_stopped_first(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    send(ctx.raw, scd4x.START_PERIODIC)
    ctx.clock.advance(60.0)
    s = started(ctx)
    assert codes(ctx.chip)[1:6] == START_SEQUENCE
    assert s.stats["failures"] == 0


# -- polling faster or slower than the chip measures --------------------------------------

def test_polling_every_second_never_fails_and_repeats_only_fresh_measurements(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    ctx.room.pin(co2=None)  # let CO2 follow the simulated room
    s = started(ctx)
    results = poll(s, ctx, 120.0, 1.0)
    assert all(r[q].ok for _, _, r in results for q in ("co2", "temperature", "humidity"))
    assert max(took for _, took, _ in results) <= scd4x.WAIT_S + 0.05
    for before, _, r in results:
        latest = [m for m in ctx.chip.measurements if m.finished <= before + scd4x.WAIT_S + 0.05][-1]
        assert before - latest.finished <= scd4x.FRESH_S
        assert r["co2"].value in {m.co2 for m in ctx.chip.measurements}
    assert 23 <= s.stats["measurements"] - 1 <= 25  # one every 5 s
    assert s.stats["failures"] == 0


def test_polling_every_200_ms_blocks_at_most_a_second(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = started(ctx)
    results = poll(s, ctx, 30.0, 0.2)
    assert all(r["co2"].ok for _, _, r in results)
    assert max(took for _, took, _ in results) <= scd4x.WAIT_S + 0.05
    assert max(ctx.slept) <= scd4x.STOP_S


def test_a_read_just_before_the_next_measurement_waits_for_it(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = sensor(ctx)
    s.read()  # start; the first measurement completes 5 s later
    ctx.clock.advance(4.6)
    before = ctx.clock.t
    r = by_quantity(s.read())
    assert r["co2"].ok and 0.3 < ctx.clock.t - before <= scd4x.WAIT_S
    assert s.stats["measurements"] == 1


def test_polling_once_a_minute_takes_a_new_measurement_each_time(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = started(ctx)
    ctx.clock.advance(60.0)
    results = poll(s, ctx, 600.0, 60.0)
    assert all(r["co2"].ok for _, _, r in results)
    assert s.stats["measurements"] == 1 + len(results) and s.stats["restarts"] == 0


# -- faults --------------------------------------------------------------------------------

def test_a_crc_error_in_the_measurement_fails_that_read_only(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = sensor(ctx)
    s.read()
    ctx.clock.advance(5.0)
    ctx.chip.corrupt_crc(word=1, command=scd4x.READ_MEASUREMENT)
    r = by_quantity(s.read())
    assert all(x.quality == "unavailable" for x in r.values())
    assert "CRC mismatch in word 1 of read_measurement" in r["co2"].reason
    ctx.clock.advance(5.0)
    assert all(x.ok for x in s.read())


def test_a_crc_error_in_data_ready_is_asked_again(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = started(ctx)
    ctx.clock.advance(5.0)
    ctx.chip.corrupt_crc()
    assert all(x.ok for x in s.read())
    assert s.stats["failures"] == 0


def test_missing_chip_fails_with_a_reason_logged_once_and_recovers(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    ctx = Ctx(tmp_path, chip=False)
    s = sensor(ctx)
    with caplog.at_level(logging.INFO, logger="hal.scd4x"):
        for _ in range(3):
            readings = s.read()
            assert [r.quality for r in readings] == ["unavailable"] * 3
            assert all("0x62" in r.reason and "errno 121" in r.reason for r in readings)
            ctx.clock.advance(1.0)
        ctx.raw.attach(0x62, ctx.chip)  # plugged in (powered up long enough ago)
        assert "first result due" in s.read()[0].reason
        ctx.clock.advance(5.0)
        assert all(r.ok for r in s.read())
    assert_warned_once_and_recovered_once(caplog)


def test_power_loss_is_noticed_and_periodic_measurement_restarted(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    ctx.room.pin(co2=None)
    s = started(ctx)
    poll(s, ctx, 12.0, 1.0)
    lost_at = ctx.clock.t
    last_before = ctx.chip.measurements[-1]
    ctx.chip.power_cycle()
    results = poll(s, ctx, 30.0, 1.0)
    # the last measurement is repeated while fresh (read at most 1 s after it completed)
    restart = next(i for i, (_, _, r) in enumerate(results) if "restarted" in (r["co2"].reason or ""))
    before_restart = [(b, r["co2"]) for b, _, r in results[:restart]]
    stale = [b for b, c in before_restart if c.ok]
    assert stale and all(c.value == last_before.co2 for _, c in before_restart if c.ok)
    assert all(b - last_before.finished <= scd4x.FRESH_S + 1.0 for b in stale)
    assert results[restart][0] - lost_at <= scd4x.STALL_S
    assert s.stats["restarts"] == 1
    after = codes(ctx.chip)[codes(ctx.chip).index(scd4x.REINIT) - 1:]
    assert after[:5] == [scd4x.STOP_PERIODIC, scd4x.REINIT, scd4x.SET_TEMPERATURE_OFFSET,
                         scd4x.SET_SENSOR_ALTITUDE, scd4x.START_PERIODIC]
    assert ctx.chip.offset_word == 0x05DA and ctx.chip.measuring
    # then unavailable "first result due" until the first measurement, and fine from then on
    later = [r["co2"] for _, _, r in results[restart + 1:]]
    first_ok = next(i for i, c in enumerate(later) if c.ok)
    assert 1 <= first_ok <= 5 and all("first result due" in c.reason for c in later[:first_ok])
    assert all(c.ok for c in later[first_ok:])


def test_power_loss_while_polled_slowly_costs_one_reading(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = started(ctx)
    ctx.clock.advance(30.0)
    ctx.chip.power_cycle()
    ctx.clock.advance(30.0)
    results = poll(s, ctx, 300.0, 60.0)
    assert [r["co2"].ok for _, _, r in results] == [False] + [True] * (len(results) - 1)
    assert "restarted" in results[0][2]["co2"].reason


class LostStartAck(EmulatedBus):
    """The chip takes start_periodic_measurement but its ACK is lost once: the retry is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def i2c_rdwr(self, *msgs) -> None:
        super().i2c_rdwr(*msgs)
        if not self.lost and list(bytes(msgs[0])) == [0x21, 0xB1]:
            self.lost += 1
            raise OSError(errno.EIO, "ACK lost")


def test_a_start_whose_retry_is_refused_is_recovered_by_stopping_first(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, raw=LostStartAck())
    s = sensor(ctx)
    first = s.read()
    assert all(r.quality == "unavailable" for r in first)
    assert "0x62" in first[0].reason and "failed after 6 tries" in first[0].reason
    assert ctx.chip.measuring  # it did start
    assert "first result due" in s.read()[0].reason
    # the second attempt: stop (accepted while measuring), configure, start; the serial is known
    assert codes(ctx.chip)[-5:-1] == [scd4x.STOP_PERIODIC, scd4x.SET_TEMPERATURE_OFFSET,
                                    scd4x.SET_SENSOR_ALTITUDE, scd4x.START_PERIODIC]
    ctx.clock.advance(5.0)
    assert all(r.ok for r in s.read())


def test_random_bus_errors_are_retried(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, raw=EmulatedBus(error_rate=0.2, seed=5))
    s = started(ctx)
    results = poll(s, ctx, 120.0, 1.0)
    assert all(r["co2"].ok for _, _, r in results)
    assert ctx.raw.errors > 20 and ctx.bus.stats["retries"] == ctx.raw.errors


def test_a_bus_that_fails_every_transfer_gives_unavailable_readings(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path, raw=EmulatedBus(error_rate=1.0, seed=5))
    r = sensor(ctx).read()
    assert all(x.quality == "unavailable" and "failed after 6 tries" in x.reason for x in r)


def test_a_closed_bus_gives_unavailable_readings(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = started(ctx)
    ctx.raw.close()
    ctx.clock.advance(5.0)
    r = s.read()
    assert all(x.quality == "unavailable" and "closed" in x.reason for x in r)


def test_unexpected_errors_are_logged_and_reported_not_raised(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    _, readings = read_through_kaboom(Ctx(tmp_path), sensor, caplog, "hal.scd4x")
    assert len(readings) == 3


def test_a_zero_ppm_sample_is_invalid_but_temperature_and_humidity_stand(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    ctx.room.pin(co2=0.2)
    s = sensor(ctx)
    s.read()
    ctx.clock.advance(5.0)
    r = by_quantity(s.read())
    assert r["co2"].quality == "unavailable" and "0 ppm" in r["co2"].reason
    assert r["temperature"].ok and r["humidity"].ok


# -- construction and closing ------------------------------------------------------------

def test_construction_touches_no_hardware(tmp_path: Path) -> None:
    assert_construction_touches_no_hardware(Ctx(tmp_path), sensor)


@pytest.mark.parametrize("kwargs", [{"altitude": 3001}, {"altitude": -1}, {"altitude": True},
                                    {"temperature_offset": 21}, {"temperature_offset": "4"},
                                    {"bus": -1}, {"address": 0x80}])
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(HalConfigError):
        sensor(Ctx(tmp_path), **kwargs)


def test_the_table_row_builds_this_class_with_its_parameters(tmp_path: Path) -> None:
    assert_table_row("scd4x", Scd4xSensor, tmp_path, [{"altitude": 5000}, {"address": 0x61}],
                     {"temperature_offset": 30})


def test_close_stops_measuring_and_later_reads_say_closed(tmp_path: Path) -> None:
    ctx = Ctx(tmp_path)
    s = started(ctx)
    s.close()
    assert not ctx.chip.measuring and codes(ctx.chip)[-1] == scd4x.STOP_PERIODIC
    r = s.read()
    assert all(x.quality == "unavailable" and x.reason == "sensor closed" for x in r)
    s.close()  # twice is fine
