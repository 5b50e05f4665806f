"""The emulated bus and BME680 chip: registers, timing, inversion, faults, the second master."""

from __future__ import annotations

import errno
import threading

import pytest
from smbus2 import i2c_msg

from hal.bme680 import (
    Bme680Calibration,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    gas_resistance_bme680,
    gas_resistance_bme688,
)
from hal.emulated.bme680_chip import (
    PIMORONI_CALIBRATION,
    EmulatedBme680,
    calibration_registers,
    perturbed_calibration,
)
from hal.emulated.bus import TRANSIENT_ERRNOS, EmulatedBus, SecondMaster
from hal.emulated.environment import RoomSimulator
from tests.clocks import ManualClock


def chip_on_bus(variant: int = 0, calib_seed: int | None = None, **bus_kwargs):
    clock = ManualClock()
    room = RoomSimulator(seed=3)
    room.pin(temperature=22.5, humidity=41.0, pressure=1008.0, gas_resistance=8.2e4)
    chip = EmulatedBme680(room, variant=variant, clock=clock, calib_seed=calib_seed)
    bus = EmulatedBus(**bus_kwargs)
    bus.attach(0x76, chip)
    return clock, room, chip, bus


def configure(bus: EmulatedBus, variant: int = 0, os_t: int = 4, os_p: int = 3, os_h: int = 2,
              gas_wait: int = 0x65, res_heat: int = 106) -> None:
    """Bosch's forced-mode set-up, written as register/value pairs like the chip wants."""
    run_gas = 0x20 if variant else 0x10
    bus.write_i2c_block_data(0x76, 0x5A, [res_heat, 0x64, gas_wait, 0x71, run_gas, 0x72, os_h])


def trigger(bus: EmulatedBus, os_t: int = 4, os_p: int = 3) -> None:
    bus.write_byte_data(0x76, 0x74, (os_t << 5) | (os_p << 2) | 0x01)


def field(bus: EmulatedBus) -> list[int]:
    return bus.read_i2c_block_data(0x76, 0x1D, 17)


# -- registers ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [0, 1])
def test_chip_id_and_variant(variant: int) -> None:
    _, _, _, bus = chip_on_bus(variant)
    assert bus.read_byte_data(0x76, 0xD0) == 0x61
    assert bus.read_byte_data(0x76, 0xF0) == variant


@pytest.mark.parametrize("seed", [None, 1, 2, 3, 99])
def test_calibration_registers_decode_to_the_chip_constants(seed: int | None) -> None:
    _, _, chip, bus = chip_on_bus(calib_seed=seed)
    blocks = (bus.read_i2c_block_data(0x76, 0x8A, 23), bus.read_i2c_block_data(0x76, 0xE1, 14),
              bus.read_i2c_block_data(0x76, 0x00, 5))
    assert Bme680Calibration.from_registers(*blocks) == chip.calibration
    if seed is not None:
        assert chip.calibration != PIMORONI_CALIBRATION


def test_calibration_layout_of_shared_humidity_byte() -> None:
    regs = calibration_registers(PIMORONI_CALIBRATION)  # par_h1 676 = 0x2A4, par_h2 1029 = 0x405
    assert (regs[0xE1], regs[0xE2], regs[0xE3]) == (0x40, 0x54, 0x2A)
    assert (regs[0xE9], regs[0xEA]) == (26041 & 0xFF, 26041 >> 8)  # par_t1, LSB first


def test_perturbed_calibration_stays_within_register_widths() -> None:
    for seed in range(50):
        cal = perturbed_calibration(seed)
        assert 0 <= cal.par_h1 < 4096 and 0 <= cal.par_h2 < 4096 and -8 <= cal.range_sw_err <= 7
        assert Bme680Calibration.from_registers(*_blocks(cal)) == cal


def _blocks(cal: Bme680Calibration) -> tuple[list[int], list[int], list[int]]:
    regs = calibration_registers(cal)
    return ([regs.get(r, 0) for r in range(0x8A, 0xA1)], [regs.get(r, 0) for r in range(0xE1, 0xEF)],
            [regs.get(r, 0) for r in range(0x00, 0x05)])


def test_multi_byte_write_is_register_value_pairs() -> None:
    _, _, chip, bus = chip_on_bus()
    bus.write_i2c_block_data(0x76, 0x72, [0x02, 0x75, 0x08])
    assert bus.read_i2c_block_data(0x76, 0x72, 4) == [0x02, 0x00, 0x00, 0x08]  # 0x73/0x74 untouched


def test_soft_reset_restores_defaults_but_keeps_calibration() -> None:
    clock, _, chip, bus = chip_on_bus()
    configure(bus)
    before = bus.read_i2c_block_data(0x76, 0x8A, 23)
    bus.write_byte_data(0x76, 0xE0, 0xB6)
    assert bus.read_i2c_block_data(0x76, 0x70, 6) == [0] * 6
    assert bus.read_byte_data(0x76, 0x5A) == 0 and bus.read_byte_data(0x76, 0x64) == 0
    assert bus.read_i2c_block_data(0x76, 0x8A, 23) == before
    f = field(bus)
    assert f[0] & 0x80 == 0 and (f[2], f[5], f[8]) == (0x80, 0x80, 0x80)
    assert chip.resets == [clock()]
    bus.write_byte_data(0x76, 0xE0, 0xB5)  # any other value is not a reset
    assert len(chip.resets) == 1


def test_read_only_registers_ignore_writes() -> None:
    _, _, chip, bus = chip_on_bus()
    bus.write_byte_data(0x76, 0xD0, 0x00)
    bus.write_byte_data(0x76, 0x8A, 0x00)
    assert bus.read_byte_data(0x76, 0xD0) == 0x61
    assert chip.calibration == PIMORONI_CALIBRATION


# -- forced measurements -----------------------------------------------------------------

def test_forced_measurement_takes_bosch_duration_plus_heater() -> None:
    clock, room, chip, bus = chip_on_bus()
    configure(bus)
    trigger(bus)
    assert bus.read_byte_data(0x76, 0x1D) & 0xE0 == 0x60  # measuring + gas measuring, no new data
    clock.advance(0.032775 + 0.148 - 1e-4)
    assert bus.read_byte_data(0x76, 0x1D) & 0x80 == 0 and chip.measuring
    clock.advance(2e-4)
    assert bus.read_byte_data(0x76, 0x1D) & 0xE0 == 0x80
    assert bus.read_byte_data(0x76, 0x74) & 0x03 == 0  # back to sleep by itself
    (m,) = chip.measurements
    assert m.gas_wait_ms == 148 and m.heat_stable and m.heater_temp == pytest.approx(320, abs=2)
    assert m.room.temperature == 22.5


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("seed", [None, 5])
def test_raw_values_compensate_back_to_the_room(variant: int, seed: int | None) -> None:
    clock, room, chip, bus = chip_on_bus(variant, calib_seed=seed)
    cal = chip.calibration
    for t, h, p, g in ((-5.0, 12.0, 850.0, 7e3), (22.5, 41.0, 1008.0, 8.2e4), (55.0, 88.0, 1090.0, 1.5e6)):
        room.pin(temperature=t, humidity=h, pressure=p, gas_resistance=g)
        configure(bus, variant)
        trigger(bus)
        clock.advance(0.2)
        f = field(bus)
        adc_p = (f[2] << 12) | (f[3] << 4) | (f[4] >> 4)
        adc_t = (f[5] << 12) | (f[6] << 4) | (f[7] >> 4)
        adc_h = (f[8] << 8) | f[9]
        centi, t_fine = compensate_temperature(adc_t, cal)
        assert abs(centi / 100 - t) <= 0.01
        assert abs(compensate_pressure(adc_p, t_fine, cal) / 100 - p) <= 0.01
        assert abs(compensate_humidity(adc_h, t_fine, cal) / 1000 - h) <= 0.01
        lo = 15 if variant else 13
        other = 13 if variant else 15
        adc_g, rng = (f[lo] << 2) | (f[lo + 1] >> 6), f[lo + 1] & 0x0F
        gas = gas_resistance_bme688(adc_g, rng) if variant else gas_resistance_bme680(adc_g, rng, cal)
        assert abs(gas - g) <= 0.005 * g
        assert f[lo + 1] & 0x30 == 0x30  # gas valid, heater stable
        assert f[other] == f[other + 1] == 0  # the other variant's gas registers stay empty
        last = chip.measurements[-1]
        assert (last.adc_t, last.adc_p, last.adc_h, last.gas_adc, last.gas_range) == (adc_t, adc_p, adc_h,
                                                                                        adc_g, rng)


def test_oversampling_sets_resolution_and_zero_skips_the_channel() -> None:
    clock, _, chip, bus = chip_on_bus()
    configure(bus, os_h=0)
    trigger(bus, os_t=1, os_p=0)
    clock.advance(0.2)
    f = field(bus)
    assert (f[2], f[3], f[4]) == (0x80, 0x00, 0x00)  # pressure skipped: 0x80000
    assert (f[8], f[9]) == (0x80, 0x00)  # humidity skipped: 0x8000
    adc_t = (f[5] << 12) | (f[6] << 4) | (f[7] >> 4)
    assert adc_t != 0x80000 and adc_t % 16 == 0  # 1x oversampling: 16 bits of 20


def test_cold_heater_is_not_stable_and_reads_high() -> None:
    clock, room, chip, bus = chip_on_bus()
    configure(bus, gas_wait=5)  # 5 ms: the heater never gets there
    trigger(bus)
    clock.advance(0.1)
    f = field(bus)
    assert f[14] & 0x30 == 0x20  # gas valid, heat_stab clear
    last = chip.measurements[-1]
    assert not last.heat_stable and last.gas_target == pytest.approx(10 * 8.2e4)


def test_reset_during_measurement_aborts_it() -> None:
    clock, _, chip, bus = chip_on_bus()
    configure(bus)
    trigger(bus)
    clock.advance(0.05)
    bus.write_byte_data(0x76, 0xE0, 0xB6)
    clock.advance(0.5)
    assert field(bus)[0] & 0x80 == 0 and not chip.measurements


# -- the bus ----------------------------------------------------------------------------

def test_unknown_address_nacks_with_eremoteio() -> None:
    _, _, _, bus = chip_on_bus()
    with pytest.raises(OSError) as info:
        bus.read_byte_data(0x40, 0x00)
    assert info.value.errno == errno.EREMOTEIO
    assert bus.record[-1].error == errno.EREMOTEIO and bus.record[-1].address == 0x40


def test_injected_errors_match_the_rate_and_errnos() -> None:
    _, _, _, bus = chip_on_bus(error_rate=0.1, seed=9)
    seen: dict[int, int] = {}
    for _ in range(3000):
        try:
            bus.read_byte_data(0x76, 0xD0)
        except OSError as exc:
            seen[exc.errno] = seen.get(exc.errno, 0) + 1
    assert 220 <= sum(seen.values()) <= 380
    assert set(seen) == set(TRANSIENT_ERRNOS)
    assert bus.transactions == 3000 and bus.errors == sum(seen.values())


def test_failed_write_may_or_may_not_have_landed() -> None:
    _, _, chip, bus = chip_on_bus(error_rate=1.0, seed=2)
    outcomes = set()
    for value in range(1, 41):
        with pytest.raises(OSError):
            bus.write_byte_data(0x76, 0x75, value)
        outcomes.add(bus.record[-1].applied)
    assert outcomes == {True, False}


def test_bit_flips_change_exactly_one_bit_of_block_reads() -> None:
    _, _, _, bus = chip_on_bus(bitflip_rate=1.0)
    clean = [bus.read_byte_data(0x76, r) for r in range(0x8A, 0x8A + 23)]  # single reads never flip
    flipped = bus.read_i2c_block_data(0x76, 0x8A, 23)
    diff = sum(bin(a ^ b).count("1") for a, b in zip(clean, flipped, strict=True))
    assert diff == 1 and bus.record[-1].flipped and bus.bitflips == 1


def test_i2c_rdwr_with_smbus2_messages() -> None:
    _, _, _, bus = chip_on_bus()
    write, read = i2c_msg.write(0x76, [0xD0]), i2c_msg.read(0x76, 1)
    bus.i2c_rdwr(write, read)
    assert list(read) == [0x61]
    bus.i2c_rdwr(i2c_msg.write(0x76, [0x75, 0x0C]))
    assert bus.read_byte_data(0x76, 0x75) == 0x0C


def test_closed_bus_raises_ebadf() -> None:
    _, _, _, bus = chip_on_bus()
    bus.close()
    with pytest.raises(OSError) as info:
        bus.read_byte_data(0x76, 0xD0)
    assert info.value.errno == errno.EBADF


def test_bus_is_thread_safe() -> None:
    _, _, _, bus = chip_on_bus()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(500):
                assert bus.read_i2c_block_data(0x76, 0xD0, 1) == [0x61]
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and bus.transactions == 2000


def test_second_master_disturbs_every_n_transactions() -> None:
    _, _, chip, bus = chip_on_bus()
    master = SecondMaster(bus, 0x76, every=50, seed=1)
    for _ in range(1000):
        bus.read_byte_data(0x76, 0xD0)
    assert 16 <= len(master.events) <= 25
    actions = {a for _, a in master.events}
    assert actions == {"reset", "reconfigure"}
    assert len(chip.resets) == sum(1 for _, a in master.events if a == "reset")
    foreign = [tx for tx in bus.record if tx.master == "second-master"]
    assert foreign and all(tx.kind == "write" for tx in foreign)
    assert bus.transactions == 1000  # its writes are not ours
