"""The BME680 driver: Bosch's compensation, Pimoroni's vector, the emulated grid, shared-bus faults."""

from __future__ import annotations

import errno
import itertools
import math
import random

import pytest

from hal.bme680 import (
    Bme680,
    Bme680Calibration,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    gas_resistance_bme680,
    gas_resistance_bme688,
    gas_wait_code,
    heater_resistance_code,
    measurement_duration_us,
)
from hal.emulated.bme680_chip import PIMORONI_CALIBRATION, EmulatedBme680, perturbed_calibration
from hal.emulated.bus import EmulatedBus, SecondMaster
from hal.emulated.environment import RoomSimulator
from hal.errors import BusError, DeviceUnavailable, HalConfigError, ImplausibleValue
from hal.i2c import RetryingBus

TOL = {"temperature": 0.01, "humidity": 0.01, "pressure": 0.1}
GAS_REL_TOL = 0.005

# Pimoroni's test calibration (bme680-python tests/conftest.py, from their issue #11).
PIMORONI = {
    "par_gh1": -30, "par_gh2": -24754, "par_gh3": 18, "par_h1": 676, "par_h2": 1029, "par_h3": 0,
    "par_h4": 45, "par_h5": 20, "par_h6": 120, "par_h7": -100, "par_p1": 36673, "par_p10": 30,
    "par_p2": -10515, "par_p3": 88, "par_p4": 7310, "par_p5": -129, "par_p6": 30, "par_p7": 46,
    "par_p8": -3177, "par_p9": -2379, "par_t1": 26041, "par_t2": 26469, "par_t3": 3,
    "range_sw_err": 0, "res_heat_range": 1, "res_heat_val": 48,
}


class FakeClock:
    """Time that moves only when something sleeps."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.slept.append(dt)
        self.t += dt


def make_stack(variant: int = 0, calib_seed: int | None = None, error_rate: float = 0.0,
               bitflip_rate: float = 0.0, seed: int = 1, timing_scale: float = 1.0, retrying: bool = True):
    clock = FakeClock()
    room = RoomSimulator(seed=1)
    chip = EmulatedBme680(room, variant=variant, clock=clock, calib_seed=calib_seed, timing_scale=timing_scale)
    raw = EmulatedBus(error_rate=error_rate, seed=seed, bitflip_rate=bitflip_rate)
    raw.attach(0x77, chip)
    bus = RetryingBus(raw, sleep=clock.sleep) if retrying else raw
    return clock, room, chip, raw, Bme680(bus, sleep=clock.sleep)


def assert_matches_room(m, room_values: dict[str, float]) -> None:
    for q, tol in TOL.items():
        assert abs(getattr(m, q) - room_values[q]) <= tol, (q, getattr(m, q), room_values[q])
    gas = room_values["gas_resistance"]
    assert abs(m.gas_resistance - gas) <= GAS_REL_TOL * gas, (m.gas_resistance, gas)


# -- Bosch's C code, transcribed with int32 wrap-around, as the reference ----------------

def i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >> 31 else x


def cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def bosch_temperature(adc: int, c: Bme680Calibration) -> tuple[int, int]:
    var1 = (adc >> 3) - (c.par_t1 << 1)
    var2 = (var1 * c.par_t2) >> 11
    var3 = ((var1 >> 1) * (var1 >> 1)) >> 12
    var3 = (var3 * (c.par_t3 << 4)) >> 14
    t_fine = i32(var2 + var3)
    return ((t_fine * 5) + 128) >> 8, t_fine


def bosch_pressure(adc: int, t_fine: int, c: Bme680Calibration) -> int:
    var1 = (t_fine >> 1) - 64000
    var2 = i32(i32(i32((var1 >> 2) * (var1 >> 2)) >> 11) * c.par_p6) >> 2
    var2 = i32(var2 + i32(i32(var1 * c.par_p5) << 1))
    var2 = i32((var2 >> 2) + (c.par_p4 << 16))
    var1 = i32((i32(i32(i32((var1 >> 2) * (var1 >> 2)) >> 13) * (c.par_p3 << 5)) >> 3)
               + (i32(c.par_p2 * var1) >> 1))
    var1 = var1 >> 18
    var1 = i32((32768 + var1) * c.par_p1) >> 15
    pc = i32(1048576 - adc)
    pc = i32((pc - (var2 >> 12)) * 3125)
    pc = i32(cdiv(pc, var1) << 1) if pc >= 0x40000000 else cdiv(i32(pc << 1), var1)
    var1 = i32(c.par_p9 * i32(i32((pc >> 3) * (pc >> 3)) >> 13)) >> 12
    var2 = i32((pc >> 2) * c.par_p8) >> 13
    var3 = i32(i32(i32((pc >> 8) * (pc >> 8)) * (pc >> 8)) * c.par_p10) >> 17
    return i32(pc + ((var1 + var2 + var3 + (c.par_p7 << 7)) >> 4))


def bosch_pressure_float(adc: int, t_fine: int, c: Bme680Calibration) -> float:
    """Bosch's floating-point path (with the integer t_fine, which differs from float t_fine)."""
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * (c.par_p6 / 131072.0)
    var2 = var2 + var1 * c.par_p5 * 2.0
    var2 = var2 / 4.0 + c.par_p4 * 65536.0
    var1 = ((c.par_p3 * var1 * var1) / 16384.0 + c.par_p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c.par_p1
    p = ((1048576.0 - adc) - var2 / 4096.0) * 6250.0 / var1
    var1 = c.par_p9 * p * p / 2147483648.0
    var2 = p * (c.par_p8 / 32768.0)
    var3 = (p / 256.0) ** 3 * (c.par_p10 / 131072.0)
    return p + (var1 + var2 + var3 + c.par_p7 * 128.0) / 16.0


def bosch_humidity(adc: int, t_fine: int, c: Bme680Calibration) -> int:
    ts = i32((t_fine * 5) + 128) >> 8
    var1 = i32((adc - c.par_h1 * 16) - (cdiv(ts * c.par_h3, 100) >> 1))
    var2 = i32(c.par_h2 * (cdiv(ts * c.par_h4, 100) + cdiv(i32(ts * cdiv(ts * c.par_h5, 100)) >> 6, 100)
                           + (1 << 14))) >> 10
    var3 = i32(var1 * var2)
    var4 = c.par_h6 << 7
    var4 = (var4 + cdiv(ts * c.par_h7, 100)) >> 4
    var5 = i32((var3 >> 14) * (var3 >> 14)) >> 10
    var6 = i32(var4 * var5) >> 1
    hum = i32((i32(var3 + var6) >> 10) * 1000) >> 12
    return min(max(hum, 0), 100000)


def bosch_gas_high(adc: int, gas_range: int) -> int:
    var1 = 262144 >> gas_range
    var2 = 4096 + (adc - 512) * 3
    return ((10000 * var1) // var2) * 100


def bosch_res_heat_float(temp: int, amb: int, c: Bme680Calibration) -> int:
    var1 = c.par_gh1 / 16.0 + 49.0
    var2 = (c.par_gh2 / 32768.0) * 0.0005 + 0.00235
    var3 = c.par_gh3 / 1024.0
    var4 = var1 * (1.0 + var2 * temp)
    var5 = var4 + var3 * amb
    return int(3.4 * (var5 * (4 / (4 + c.res_heat_range)) * (1 / (1 + c.res_heat_val * 0.002)) - 25))


CALIBRATIONS = [PIMORONI_CALIBRATION] + [perturbed_calibration(s) for s in range(1, 6)]


# -- (b) Pimoroni's published vector ----------------------------------------------------

def test_pimoroni_calibration_is_the_emulator_default() -> None:
    assert Bme680Calibration(**PIMORONI) == PIMORONI_CALIBRATION


def test_pimoroni_vector_reproduced() -> None:
    cal = Bme680Calibration(**PIMORONI)
    centi, t_fine = compensate_temperature(501240, cal)
    assert (centi, t_fine) == (2669, 136667)
    assert compensate_pressure(353485, t_fine, cal) == 98712
    assert compensate_humidity(19019, t_fine, cal) == 42402
    assert gas_resistance_bme680(0, 0, cal) == 12946860


def test_pimoroni_vector_through_the_registers() -> None:
    """The driver decodes the calibration bytes of a chip holding Pimoroni's constants."""
    clock, room, chip, raw, driver = make_stack()
    driver.init()
    assert driver.calibration == Bme680Calibration(**PIMORONI)
    assert driver.variant == 0


# -- equal to Bosch's integer reference -------------------------------------------------

@pytest.mark.parametrize("cal", CALIBRATIONS, ids=lambda c: f"t1={c.par_t1}")
def test_compensation_equals_bosch_integer_path(cal: Bme680Calibration) -> None:
    rng = random.Random(cal.par_t1)
    for _ in range(1500):
        adc_t = rng.randrange(380_000, 640_000)  # about -40..85 °C
        centi, t_fine = compensate_temperature(adc_t, cal)
        assert (centi, t_fine) == bosch_temperature(adc_t, cal)
        adc_h = rng.randrange(0, 65536)
        ours = compensate_humidity(adc_h, t_fine, cal)
        if ours < 100_000:  # Bosch's int32 overflows only for raw values far above 100 %RH
            assert ours == bosch_humidity(adc_h, t_fine, cal), adc_h
        adc_p = rng.randrange(300_000, 700_000)
        ours, bosch = compensate_pressure(adc_p, t_fine, cal), bosch_pressure(adc_p, t_fine, cal)
        # compare where Bosch's `var3` (pressure >> 8)**3 * par_p10 stays inside int32
        if ours >= 30_000 and ((ours >> 8) + 2) ** 3 * cal.par_p10 < 2**31:
            assert 0 <= ours - bosch <= 1, (adc_p, ours, bosch)
        gas_adc, gas_range = rng.randrange(1024), rng.randrange(16)
        assert 0 <= gas_resistance_bme688(gas_adc, gas_range) - bosch_gas_high(gas_adc, gas_range) < 100


def test_pressure_does_not_reproduce_bosch_int32_overflow() -> None:
    """Above ~1065 hPa Bosch's var3 wraps with par_p10 = 30; ours stays with the float path."""
    cal = PIMORONI_CALIBRATION
    _, t_fine = compensate_temperature(501240, cal)
    adc = next(a for a in range(300_000, 200_000, -100) if compensate_pressure(a, t_fine, cal) >= 109_000)
    ours = compensate_pressure(adc, t_fine, cal)
    # the integer and float paths normally differ by a few Pa
    assert abs(ours - bosch_pressure_float(adc, t_fine, cal)) < 10
    assert abs(bosch_pressure(adc, t_fine, cal) - ours) > 1000  # Bosch's C is ~20 hPa off here


@pytest.mark.parametrize("cal", CALIBRATIONS[:3], ids=lambda c: f"t1={c.par_t1}")
def test_heater_code_matches_bosch_float_path(cal: Bme680Calibration) -> None:
    # Bosch's integer and float heater formulas agree to two code steps (~3 °C).
    for temp, amb in itertools.product(range(200, 401, 10), range(-10, 45, 5)):
        assert abs(heater_resistance_code(temp, amb, cal) - bosch_res_heat_float(temp, amb, cal)) <= 2


def test_heater_code_example_and_gas_wait_encoding() -> None:
    assert heater_resistance_code(320, 25, PIMORONI_CALIBRATION) == 106
    assert [gas_wait_code(ms) for ms in (1, 63, 64, 150, 4031, 4032)] == [1, 63, 80, 101, 254, 0xFF]


def test_measurement_duration_is_bosch_formula() -> None:
    # 8x T, 4x P, 2x H: 14 conversions of 1963 µs + 9 × 477 µs switching/gas + 1 ms wake-up
    assert measurement_duration_us(4, 3, 2) == 14 * 1963 + 477 * 9 + 1000 == 32775
    clock, room, chip, raw, driver = make_stack()
    assert driver.wait_time() == pytest.approx(0.032775 + 0.150)


# -- (a) the grid: the real driver through the emulated bus ----------------------------

GRID = list(itertools.product((-10.0, 0.0, 18.5, 25.0, 42.0, 60.0), (5.0, 33.0, 61.0, 95.0),
                              (800.0, 950.0, 1013.25, 1100.0), (5e3, 47e3, 6.8e5, 2e6)))


@pytest.mark.parametrize("variant", [0, 1], ids=["bme680", "bme688"])
@pytest.mark.parametrize("calib_seed", [None, 7], ids=["pimoroni-cal", "other-cal"])
def test_grid_driver_matches_room(variant: int, calib_seed: int | None) -> None:
    clock, room, chip, raw, driver = make_stack(variant=variant, calib_seed=calib_seed)
    for t, h, p, g in GRID:
        room.pin(temperature=t, humidity=h, pressure=p, gas_resistance=g)
        m = driver.measure()
        assert m.heat_stable and m.gas_valid
        assert_matches_room(m, {"temperature": t, "humidity": h, "pressure": p, "gas_resistance": g})
    assert len(chip.measurements) == len(GRID)
    assert driver.stats["inits"] == 1 and driver.stats["timeouts"] == 0


def test_driver_waits_bosch_duration_then_reads_once() -> None:
    clock, room, chip, raw, driver = make_stack()
    driver.measure()
    before = len(raw.record)
    driver.measure()
    record = list(raw.record)[before:]
    status_reads = [tx for tx in record if tx.kind == "read" and tx.register == 0x1D and len(tx.data) == 1]
    assert len(status_reads) == 1 and status_reads[0].data[0] & 0x80  # ready on the first poll
    last = chip.measurements[-1]
    assert last.finished - last.started == pytest.approx(0.032775 + 0.148)  # gas_wait code 101 = 148 ms
    assert last.heater_temp == pytest.approx(320, abs=2)


def test_slow_chip_is_polled_until_ready() -> None:
    clock, room, chip, raw, driver = make_stack(timing_scale=1.15)
    room.pin(temperature=20.0, humidity=50.0, pressure=1000.0, gas_resistance=1e5)
    m = driver.measure()
    assert_matches_room(m, {"temperature": 20, "humidity": 50, "pressure": 1000, "gas_resistance": 1e5})
    assert driver.stats["timeouts"] == 0


def test_chip_far_slower_than_bound_times_out() -> None:
    clock, room, chip, raw, driver = make_stack(timing_scale=5.0)
    with pytest.raises(DeviceUnavailable, match="no new data"):
        driver.measure()
    assert driver.stats["timeouts"] == driver.attempts


# -- robustness: foreign changes, rejected values, absent chips ------------------------

def test_reset_between_measurements_reinitialises() -> None:
    clock, room, chip, raw, driver = make_stack()
    room.pin(temperature=21.0, humidity=45.0, pressure=990.0, gas_resistance=2e5)
    driver.measure()
    chip.write(0xE0, [0xB6])  # the other board resets the chip
    m = driver.measure()
    assert_matches_room(m, {"temperature": 21, "humidity": 45, "pressure": 990, "gas_resistance": 2e5})
    assert driver.stats["inits"] == 2 and driver.stats["foreign_changes"] == 1
    assert chip.triggers == 2  # caught before triggering: no measurement wasted


def test_reset_during_measurement_is_detected() -> None:
    clock = FakeClock()
    room = RoomSimulator()
    room.pin(temperature=21.0, humidity=45.0, pressure=990.0, gas_resistance=2e5)
    chip = EmulatedBme680(room, clock=clock)
    raw = EmulatedBus()
    raw.attach(0x77, chip)
    armed = {"reset": False}

    def sleep(dt: float) -> None:
        clock.sleep(dt)
        if armed["reset"] and dt > 0.1:  # the long wait after the trigger
            armed["reset"] = False
            chip.write(0xE0, [0xB6])

    driver = Bme680(raw, sleep=sleep)
    driver.measure()
    armed["reset"] = True
    m = driver.measure()
    assert_matches_room(m, {"temperature": 21, "humidity": 45, "pressure": 990, "gas_resistance": 2e5})
    assert driver.stats["timeouts"] == 1 and driver.stats["inits"] == 2


def test_foreign_oversampling_change_is_detected_after_the_read() -> None:
    clock, room, chip, raw, driver = make_stack()
    driver.measure()
    triggers = chip.triggers
    fired: list[int] = []

    def hook(n: int) -> None:
        # right after our trigger, the other board writes its humidity oversampling, once
        if chip.triggers == triggers + 1 and not fired:
            fired.append(n)
            chip.write(0x72, [0x00])

    raw.add_hook(hook)
    driver.measure()
    assert fired and driver.stats["foreign_changes"] == 1 and driver.stats["inits"] == 2
    assert chip.triggers == triggers + 2  # the tainted measurement was thrown away and repeated


class SkippedHumidityBus(EmulatedBus):
    """A bus whose field-data reads show humidity skipped (0x8000), as after foreign settings."""

    def read_i2c_block_data(self, i2c_addr, register, length, force=None):
        data = super().read_i2c_block_data(i2c_addr, register, length)
        if register == 0x1D and length == 17:
            data[8], data[9] = 0x80, 0x00
        return data


def test_skipped_channel_raises_implausible_value() -> None:
    clock = FakeClock()
    bus = SkippedHumidityBus()
    bus.attach(0x77, EmulatedBme680(RoomSimulator(), clock=clock))
    driver = Bme680(bus, sleep=clock.sleep)
    with pytest.raises(ImplausibleValue, match="skipped"):
        driver.measure()
    assert driver.stats["inits"] == driver.attempts  # each attempt started from a soft reset


def test_out_of_range_value_raises_implausible_value() -> None:
    clock, room, chip, raw, driver = make_stack()
    room.pin(temperature=95.0, humidity=20.0, pressure=1000.0, gas_resistance=1e5)
    with pytest.raises(ImplausibleValue, match="temperature"):
        driver.measure()


def test_absent_chip_raises_bus_error_with_errno() -> None:
    clock = FakeClock()
    raw = EmulatedBus()
    driver = Bme680(RetryingBus(raw, sleep=clock.sleep), sleep=clock.sleep)
    with pytest.raises(BusError, match=f"errno {errno.EREMOTEIO}") as info:
        driver.measure()
    assert isinstance(info.value, DeviceUnavailable)
    driver_raw = Bme680(raw, sleep=clock.sleep)  # a plain SMBus-like object: OSError still typed
    with pytest.raises(BusError):
        driver_raw.measure()


def test_wrong_chip_id_is_unavailable() -> None:
    clock, room, chip, raw, driver = make_stack()
    chip._regs[0xD0] = 0x60  # a BME280 answers at this address
    with pytest.raises(DeviceUnavailable, match="chip id 0x60"):
        driver.measure()


@pytest.mark.parametrize("kwargs", [{"address": 0x50}, {"heater_temp": 450}, {"heater_ms": 0},
                                    {"os_h": 0}, {"attempts": 0}])
def test_bad_parameters_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(HalConfigError):
        Bme680(None, **kwargs)


# -- (c) a shared bus at 10 % errors with a second master ------------------------------

@pytest.mark.parametrize("variant", [0, 1], ids=["bme680", "bme688"])
def test_shared_bus_faults_never_give_a_wrong_value(variant: int) -> None:
    clock, room, chip, raw, driver = make_stack(variant=variant, error_rate=0.10, seed=11 + variant)
    master = SecondMaster(raw, 0x77, every=100, seed=5 + variant)
    values = {"temperature": 23.4, "humidity": 48.0, "pressure": 1004.0, "gas_resistance": 1.2e5}
    room.pin(**values)
    ok = wrong = 0
    failures: list[str] = []
    for _ in range(300):
        try:
            m = driver.measure()
        except (DeviceUnavailable, ImplausibleValue) as exc:
            failures.append(str(exc))
            continue
        try:
            assert_matches_room(m, values)
            assert m.heat_stable and m.gas_valid
            ok += 1
        except AssertionError:
            wrong += 1
    print(f"variant {variant}: {ok}/300 ok, {wrong} wrong, {len(failures)} failed; "
          f"{raw.errors} injected errors in {raw.transactions} transactions, "
          f"{len(master.events)} foreign events, driver {driver.stats}")
    assert wrong == 0
    assert ok >= 285, failures[:5]
    # the faults really happened
    assert raw.errors > 300 and len(master.events) >= 20 and driver.stats["inits"] > 10


def test_bit_flips_in_block_reads_never_give_a_wrong_value() -> None:
    clock, room, chip, raw, driver = make_stack(bitflip_rate=0.05, seed=4)
    values = {"temperature": 19.0, "humidity": 55.0, "pressure": 970.0, "gas_resistance": 3.3e5}
    room.pin(**values)
    ok = 0
    for _ in range(300):
        try:
            m = driver.measure()
        except (DeviceUnavailable, ImplausibleValue):
            continue
        assert_matches_room(m, values)
        ok += 1
    print(f"bit flips: {ok}/300 ok, {raw.bitflips} flipped reads, driver {driver.stats}")
    assert ok >= 295 and raw.bitflips > 50 and driver.stats["field_mismatches"] > 0


def test_gas_formulas_monotonic_so_the_emulator_can_invert_them() -> None:
    for gas_range in range(16):
        low = [gas_resistance_bme680(a, gas_range, PIMORONI_CALIBRATION) for a in range(1024)]
        high = [gas_resistance_bme688(a, gas_range) for a in range(1024)]
        assert all(x >= y for x, y in itertools.pairwise(low))
        assert all(x > y for x, y in itertools.pairwise(high))
    assert math.isclose(gas_resistance_bme688(512, 0), 1e6 * 262144 / 4096)
