"""SHT4x / SHT3x: datasheet conversions, CRC, both models on the emulated chip, every fault."""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.crc import sensirion_crc8
from hal.emulated.bus import EmulatedBus
from hal.emulated.environment import RoomSimulator
from hal.emulated.sht_chip import EmulatedSht, words
from hal.errors import HalConfigError
from hal.i2c import RetryingBus
from hal.sensor import SENSOR_KINDS
from hal.sht4x import MODELS, ShtSensor, check_words, sht3x_humidity, sht4x_humidity, sht_temperature
from tests.unit.hal_fakes import (
    ChipCtx,
    FakeClock,
    assert_construction_touches_no_hardware,
    assert_warned_once_and_recovered_once,
    mock_context,
    read_through_kaboom,
)

ROOM = {"temperature": 23.4, "humidity": 51.2}
STEP_T = 175 / 65535  # one count of the temperature word


class Ctx(ChipCtx):
    """An emulated chip of `model` at `address` (none for model None) in the room at ROOM."""

    def __init__(self, model: str | None = "sht4x", address: int = 0x44, bus: EmulatedBus | None = None) -> None:
        super().__init__(ROOM, bus)
        if model:
            self.place(address, EmulatedSht(self.room, model=model, clock=self.clock))


def sensor(ctx: Ctx, **kwargs: object) -> ShtSensor:
    kwargs.setdefault("sleep", ctx.sleep)
    return ShtSensor(ctx, "air", **kwargs)  # type: ignore[arg-type]


def values(readings: list) -> dict[str, float | None]:
    assert [r.quantity for r in readings] == ["temperature", "humidity"]
    return {r.quantity: r.value for r in readings}


def reasons(readings: list) -> dict[str, str | None]:
    return {r.quantity: r.reason for r in readings}


# -- datasheet formulas and CRC --------------------------------------------------------

def test_temperature_formula_at_known_words() -> None:
    assert sht_temperature(0x6666) == 25.0  # 0x6666 / 0xFFFF = 0.4 exactly: -45 + 70
    assert sht_temperature(0x0000) == -45.0 and sht_temperature(0xFFFF) == 130.0


def test_sht4x_humidity_formula_and_cropping() -> None:
    assert sht4x_humidity(0x6666) == 44.0  # -6 + 125 * 0.4
    assert sht4x_humidity(0x0000) == 0.0  # -6 cropped
    assert sht4x_humidity(0xFFFF) == 100.0  # 119 cropped
    assert sht4x_humidity(0x0C4A) == pytest.approx(0.0, abs=0.002)  # where -6 + 125 x crosses 0


def test_sht3x_humidity_formula() -> None:
    assert sht3x_humidity(0x6666) == 40.0
    assert sht3x_humidity(0x0000) == 0.0 and sht3x_humidity(0xFFFF) == 100.0


def test_crc_vector_and_word_check() -> None:
    assert sensirion_crc8([0xBE, 0xEF]) == 0x92  # the datasheet example
    assert words(0xBEEF) == [0xBE, 0xEF, 0x92]
    good, bad = check_words([0xBE, 0xEF, 0x92, 0xBE, 0xEF, 0x93])
    assert good == (0xBEEF, None) and bad[0] == 0xBEEF and "expected 92" in bad[1]


# -- both models end to end ------------------------------------------------------------

@pytest.mark.parametrize(("model", "precision", "command", "wait"), [
    ("sht4x", "high", [0xFD], 0.0083), ("sht4x", "medium", [0xF6], 0.0045), ("sht4x", "low", [0xE0], 0.0016),
    ("sht3x", "high", [0x24, 0x00], 0.015), ("sht3x", "medium", [0x24, 0x0B], 0.006),
    ("sht3x", "low", [0x24, 0x16], 0.004),
])
def test_each_model_and_precision_measures_the_room(model: str, precision: str, command: list[int],
                                                    wait: float) -> None:
    ctx = Ctx(model)
    waits: list[float] = []

    def sleep(dt: float) -> None:
        waits.append(dt)
        ctx.clock.sleep(dt)

    readings = sensor(ctx, model=model, precision=precision, sleep=sleep).read()
    v = values(readings)
    assert all(r.ok for r in readings) and {r.sensor for r in readings} == {"air"}
    assert v["temperature"] == pytest.approx(ROOM["temperature"], abs=0.01)
    assert v["humidity"] == pytest.approx(ROOM["humidity"], abs=0.01)
    assert waits == [wait]
    writes = [t.data for t in ctx.raw.record if t.kind == "write"]
    reads = [t.data for t in ctx.raw.record if t.kind == "read"]
    assert writes == [tuple(command)] and len(reads) == 1 and len(reads[0]) == 6
    assert all(t.register == -1 for t in ctx.raw.record)
    [m] = ctx.chip.measurements
    assert m.finished <= readings[0].ts


@pytest.mark.parametrize(("model", "address"), [("sht4x", 0x44), ("sht3x", 0x45)])
def test_mock_mode_builds_both_models_from_the_sensor_table(tmp_path: Path, model: str, address: int) -> None:
    ctx, _ = mock_context(tmp_path, **ROOM)  # the sensor waits on ctx.sleep
    s = SENSOR_KINDS["sht4x"].build(ctx, "air", {"model": model, "address": address})
    assert isinstance(s, ShtSensor) and (s.kind, s.quantities) == ("sht4x", ("temperature", "humidity"))
    v = values(s.read())
    assert v == {"temperature": pytest.approx(23.4, abs=0.01), "humidity": pytest.approx(51.2, abs=0.01)}
    chip = ctx.i2c_bus(1).bus.chip(address)
    assert isinstance(chip, EmulatedSht) and chip.model == model and len(chip.measurements) == 1
    ctx.close()


def test_works_without_smbus2_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smbus2", None)  # mock mode needs no 'real' extra
    ctx = Ctx()
    assert all(r.ok for r in sensor(ctx).read())


def test_temperature_is_quantised_like_the_chip() -> None:
    ctx = Ctx()
    ctx.room.pin(temperature=20.0 + STEP_T * 0.4)  # between two counts: the nearer one is sent
    sensor(ctx).read()
    [m] = ctx.chip.measurements
    assert sht_temperature(m.raw_t) == pytest.approx(20.0, abs=STEP_T / 2)


# -- conversion time: a read too early is NACKed ---------------------------------------

def test_emulated_chip_nacks_a_read_before_the_conversion_is_done() -> None:
    clock = FakeClock()
    room = RoomSimulator()
    room.pin(**ROOM)
    chip = EmulatedSht(room, clock=clock)
    chip.command([0xFD])
    with pytest.raises(OSError) as info:
        chip.read_raw(6)
    assert info.value.errno == errno.EREMOTEIO
    with pytest.raises(OSError):
        chip.command([0xFD])  # busy: no ACK for anything
    clock.sleep(0.007)  # just over the typical duration
    data = chip.read_raw(6)
    assert [w for w, problem in check_words(data) if problem is None] == [chip.measurements[0].raw_t,
                                                                          chip.measurements[0].raw_rh]
    with pytest.raises(OSError):
        chip.read_raw(6)  # read once: nothing left
    assert chip.nacks == 3


def test_a_chip_slower_than_the_datasheet_is_covered_by_the_bus_retries() -> None:
    ctx = Ctx()
    ctx.chip.timing_scale = 1.5  # 10.4 ms where the driver waits 8.3
    readings = sensor(ctx).read()
    assert all(r.ok for r in readings)
    assert ctx.bus.stats["retries"] >= 1 and ctx.chip.nacks >= 1


def test_no_time_passing_ends_as_a_failed_result_read() -> None:
    ctx = Ctx()
    ctx.bus = RetryingBus(ctx.raw, sleep=lambda dt: None)
    readings = sensor(ctx, sleep=lambda dt: None).read()
    assert all(r.quality == "unavailable" for r in readings)
    assert "no ACK from the SHT4x at 0x44 on bus 1 for the result" in readings[0].reason


# -- CRC errors ------------------------------------------------------------------------

class FlippingChip(EmulatedSht):
    """Flips bit 0 of chosen bytes of the next reads (one set per read)."""

    def __init__(self, room: RoomSimulator, clock: FakeClock, flips: list[tuple[int, ...]]) -> None:
        super().__init__(room, clock=clock)
        self.flips = flips

    def read_raw(self, n: int) -> list[int]:
        data = super().read_raw(n)
        for i in self.flips.pop(0) if self.flips else ():
            data[i] ^= 0x01
        return data


def flipping_ctx(flips: list[tuple[int, ...]]) -> Ctx:
    ctx = Ctx(model=None)
    ctx.place(0x44, FlippingChip(ctx.room, ctx.clock, flips))
    return ctx


def test_one_crc_error_is_measured_again() -> None:
    ctx = flipping_ctx([(0,)])
    s = sensor(ctx)
    assert all(r.ok for r in s.read())
    assert s.stats["crc_errors"] == 1 and len(ctx.chip.measurements) == 2


def test_persistent_crc_error_fails_only_the_word_it_hit() -> None:
    ctx = flipping_ctx([(1,), (2,)])  # temperature LSB, then the temperature CRC byte
    readings = sensor(ctx).read()
    r = reasons(readings)
    assert "CRC error in the temperature word" in r["temperature"] and r["humidity"] is None
    assert values(readings)["humidity"] == pytest.approx(ROOM["humidity"], abs=0.01)


def test_crc_errors_in_both_words() -> None:
    ctx = flipping_ctx([(0, 4), (0, 4)])
    readings = sensor(ctx).read()
    assert all(r.quality == "unavailable" and "CRC error" in r.reason for r in readings)


def test_bus_bit_flips_never_pass_as_values() -> None:
    ctx = Ctx(bus=EmulatedBus(bitflip_rate=1.0, seed=4))
    s = sensor(ctx, attempts=1)
    for _ in range(30):
        readings = s.read()
        assert sum("CRC error" in (r.reason or "") for r in readings) == 1  # one flip, one word
        for r in readings:
            assert r.value is None or r.value == pytest.approx(ROOM[r.quantity], abs=0.01)


# -- missing chip, wrong model, bus faults ---------------------------------------------

def test_missing_chip_is_no_ack_logged_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    ctx = Ctx(model=None)
    s = sensor(ctx)
    with caplog.at_level(logging.INFO, logger="hal.sht4x"):
        for _ in range(3):
            readings = s.read()
            assert all(r.quality == "unavailable" for r in readings)
            reason = readings[0].reason
            assert reason.startswith("no ACK from 0x44 on bus 1") and "nothing answers there" in reason
        ctx.raw.attach(0x44, EmulatedSht(ctx.room, clock=ctx.clock))
        assert all(r.ok for r in s.read())
    assert_warned_once_and_recovered_once(caplog)


@pytest.mark.parametrize(("chip_model", "configured"), [("sht3x", "sht4x"), ("sht4x", "sht3x")])
def test_wrong_model_for_the_chip_says_which_it_is(chip_model: str, configured: str) -> None:
    ctx = Ctx(chip_model)
    readings = sensor(ctx, model=configured).read()
    assert all(r.quality == "unavailable" for r in readings)
    assert f'set model = "{chip_model}"' in readings[0].reason
    assert f"serial 0x{ctx.chip.serial:08x}" in readings[0].reason
    assert not ctx.chip.measurements


def test_serial_number_reads_back() -> None:
    ctx = Ctx("sht3x")
    assert sensor(ctx, model="sht3x").serial_number() == ctx.chip.serial


def test_transient_bus_errors_are_retried_away() -> None:
    ctx = Ctx(bus=EmulatedBus(error_rate=0.3, seed=3))
    s = sensor(ctx)
    for _ in range(20):
        assert all(r.ok for r in s.read())
    assert ctx.bus.stats["retries"] > 0


def test_a_bus_that_always_fails_gives_readings_with_the_reason() -> None:
    ctx = Ctx(bus=EmulatedBus(error_rate=1.0, seed=3))
    for _ in range(10):
        readings = sensor(ctx).read()
        assert all(r.quality == "unavailable" and "failed after 6 tries" in r.reason for r in readings)


def test_unexpected_errors_and_close_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    s, _ = read_through_kaboom(Ctx(), sensor, caplog, "hal.sht4x")
    s.close()
    assert reasons(s.read()) == {"temperature": "sensor closed", "humidity": "sensor closed"}


def test_temperature_beyond_the_readings_table_fails_alone() -> None:
    ctx = Ctx()
    ctx.room.pin(temperature=128.0)  # the chip's scale reaches 130 °C, beyond any plausible reading
    r = reasons(sensor(ctx).read())
    assert "outside the plausible range" in r["temperature"] and r["humidity"] is None


@pytest.mark.parametrize("kwargs", [{"address": 0x46, "model": "sht3x"}, {"address": 0x40}, {"model": "sht2x"},
                                    {"precision": "ultra"}, {"bus": -1}, {"attempts": 0}])
def test_bad_configuration_is_refused(kwargs: dict) -> None:
    with pytest.raises(HalConfigError):
        sensor(Ctx(), **kwargs)


def test_construction_touches_no_hardware() -> None:
    assert_construction_touches_no_hardware(Ctx(model=None), sensor)


# -- the emulated chip's command sets ---------------------------------------------------

@pytest.fixture
def room() -> Iterator[RoomSimulator]:
    r = RoomSimulator()
    r.pin(**ROOM)
    yield r


@pytest.mark.parametrize(("model", "data"), [("sht4x", [0x24, 0x00]), ("sht4x", [0x00]), ("sht3x", [0xFD]),
                                             ("sht3x", [0x20, 0x32]), ("sht3x", [0x12, 0x34])])
def test_emulated_chip_nacks_what_its_model_does_not_know(room: RoomSimulator, model: str, data: list) -> None:
    chip = EmulatedSht(room, model=model, clock=FakeClock())
    with pytest.raises(OSError) as info:
        chip.command(data)
    assert info.value.errno == errno.EREMOTEIO and chip.nacks == 1


def test_emulated_sht4x_serial_and_soft_reset(room: RoomSimulator) -> None:
    clock = FakeClock()
    chip = EmulatedSht(room, clock=clock, serial=0x12345678)
    chip.command([0x89])
    assert chip.read_raw(6) == words(0x1234, 0x5678)
    chip.command([0x94])
    with pytest.raises(OSError):
        chip.command([0xFD])  # still resetting
    clock.sleep(0.0011)
    chip.command([0xFD])
    assert chip.resets == 1


def test_emulated_sht3x_status_heater_and_stretched_measurement(room: RoomSimulator) -> None:
    clock = FakeClock()
    chip = EmulatedSht(room, model="sht3x", clock=clock)
    chip.command([0x30, 0x41])  # clear status
    chip.command([0x30, 0x6D])  # heater on
    chip.command([0xF3, 0x2D])
    assert check_words(chip.read_raw(3)) == [(0x2000, None)]
    chip.command([0x2C, 0x06])  # clock stretching: the read waits for the result
    (t, ok_t), (rh, ok_rh) = check_words(chip.read_raw(6))
    assert ok_t is ok_rh is None and sht3x_humidity(rh) == pytest.approx(ROOM["humidity"], abs=0.01)


def test_every_model_in_the_driver_has_a_known_command_on_its_chip(room: RoomSimulator) -> None:
    for model, spec in MODELS.items():
        for command in (*spec.measure.values(), spec.serial):
            EmulatedSht(room, model=model, clock=FakeClock()).command(list(command))
