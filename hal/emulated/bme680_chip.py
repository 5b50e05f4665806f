"""A register-level BME680/BME688 that measures the simulated room.

The chip holds calibration constants in its registers and, when triggered in forced mode,
takes as long as Bosch says a measurement takes, then fills the field-data registers with
raw ADC values found by inverting Bosch's compensation for the room's conditions: for each
channel the integer ADC code whose compensated value is closest to the room. It is a
measuring instrument for tests: every completed measurement is kept in `measurements`
with its targets, settings and raw codes, and every soft reset in `resets`.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from hal.bme680 import (
    Bme680Calibration,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    gas_resistance_bme680,
    gas_resistance_bme688,
    heater_resistance_code,
    measurement_duration_us,
)
from hal.emulated import HISTORY
from hal.emulated.environment import RoomConditions

# A real chip's calibration dump (Pimoroni bme680-python issue #11, used in their tests).
PIMORONI_CALIBRATION = Bme680Calibration(
    par_t1=26041, par_t2=26469, par_t3=3,
    par_p1=36673, par_p2=-10515, par_p3=88, par_p4=7310, par_p5=-129, par_p6=30, par_p7=46,
    par_p8=-3177, par_p9=-2379, par_p10=30,
    par_h1=676, par_h2=1029, par_h3=0, par_h4=45, par_h5=20, par_h6=120, par_h7=-100,
    par_gh1=-30, par_gh2=-24754, par_gh3=18,
    res_heat_range=1, res_heat_val=48, range_sw_err=0,
)

# (field, bits, signed): the register width of each constant, to keep perturbations legal
_WIDTHS: dict[str, tuple[int, bool]] = {
    "par_t1": (16, False), "par_t2": (16, True), "par_t3": (8, True),
    "par_p1": (16, False), "par_p2": (16, True), "par_p3": (8, True), "par_p4": (16, True),
    "par_p5": (16, True), "par_p6": (8, True), "par_p7": (8, True), "par_p8": (16, True),
    "par_p9": (16, True), "par_p10": (8, False),
    "par_h1": (12, False), "par_h2": (12, False), "par_h3": (8, True), "par_h4": (8, True),
    "par_h5": (8, True), "par_h6": (8, False), "par_h7": (8, True),
    "par_gh1": (8, True), "par_gh2": (16, True), "par_gh3": (8, True),
    "res_heat_range": (2, False), "res_heat_val": (8, True), "range_sw_err": (4, True),
}
CHIP_ID = 0x61
SKIP_TP, SKIP_H = 0x80000, 0x8000
COLD_HEATER_FACTOR = 10.0  # a MOX layer below its working temperature reads far higher
HEATER_SETTLE_MS = 20  # the heater needs ~20-30 ms to reach its target
MIN_HEATER_C = 150.0  # below this the gas reading means nothing


def perturbed_calibration(seed: int, base: Bme680Calibration = PIMORONI_CALIBRATION) -> Bme680Calibration:
    """A plausible other chip: large constants moved by up to ±1.5 %, small ones by ±1."""
    rng = random.Random(seed)
    changes: dict[str, int] = {}
    for f in fields(base):
        value = getattr(base, f.name)
        bits, signed = _WIDTHS[f.name]
        step = round(abs(value) * rng.uniform(-0.015, 0.015)) if abs(value) > 200 else rng.randint(-1, 1)
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        changes[f.name] = min(high, max(low, value + step))
    return replace(base, **changes)


def calibration_registers(cal: Bme680Calibration) -> dict[int, int]:
    """Register address -> byte for a calibration set, in the chip's layout."""
    regs: dict[int, int] = {}

    def put16(lsb_reg: int, value: int) -> None:
        regs[lsb_reg] = value & 0xFF
        regs[lsb_reg + 1] = (value >> 8) & 0xFF

    put16(0x8A, cal.par_t2)
    regs[0x8C] = cal.par_t3 & 0xFF
    put16(0x8E, cal.par_p1)
    put16(0x90, cal.par_p2)
    regs[0x92] = cal.par_p3 & 0xFF
    put16(0x94, cal.par_p4)
    put16(0x96, cal.par_p5)
    regs[0x98] = cal.par_p7 & 0xFF
    regs[0x99] = cal.par_p6 & 0xFF
    put16(0x9C, cal.par_p8)
    put16(0x9E, cal.par_p9)
    regs[0xA0] = cal.par_p10 & 0xFF
    regs[0xE1] = (cal.par_h2 >> 4) & 0xFF
    regs[0xE2] = ((cal.par_h2 & 0x0F) << 4) | (cal.par_h1 & 0x0F)  # H2 and H1 share a byte
    regs[0xE3] = (cal.par_h1 >> 4) & 0xFF
    for reg, value in zip(range(0xE4, 0xE9), (cal.par_h3, cal.par_h4, cal.par_h5, cal.par_h6, cal.par_h7),
                          strict=True):
        regs[reg] = value & 0xFF
    put16(0xE9, cal.par_t1)
    put16(0xEB, cal.par_gh2)
    regs[0xED] = cal.par_gh1 & 0xFF
    regs[0xEE] = cal.par_gh3 & 0xFF
    regs[0x00] = cal.res_heat_val & 0xFF
    # The other bits of these bytes are not calibration; fill them so a driver must mask.
    regs[0x02] = ((cal.res_heat_range & 0x03) << 4) | 0xC5
    regs[0x04] = ((cal.range_sw_err & 0x0F) << 4) | 0x0A
    for reg in (0x8D, 0x93, 0x9A, 0x9B, 0x01, 0x03):
        regs[reg] = 0x5A
    return regs


@dataclass(frozen=True, slots=True)
class ChipMeasurement:
    """One completed forced-mode measurement: what the room was and what the chip reported."""

    started: float
    finished: float
    room: RoomConditions
    os_t: int
    os_p: int
    os_h: int
    adc_t: int
    adc_p: int
    adc_h: int
    gas_adc: int
    gas_range: int
    gas_enabled: bool
    heat_stable: bool
    heater_temp: float | None  # °C the res_heat code stands for, at the room's temperature
    gas_wait_ms: int
    gas_target: float  # Ω the gas ADC was set to represent


class EmulatedBme680:
    """Register model of a BME680 (variant 0) or BME688 (variant 1) in forced mode."""

    def __init__(self, room: Any, variant: int = 0, clock: Callable[[], float] = time.time,
                 calib_seed: int | None = None, timing_scale: float = 1.0, history: int = HISTORY) -> None:
        if variant not in (0, 1):
            raise ValueError(f"variant must be 0 (BME680) or 1 (BME688), got {variant!r}")
        self.room = room
        self.variant = variant
        self.clock = clock
        self.timing_scale = timing_scale  # >1: a chip slower than Bosch's nominal duration
        self.calibration = (PIMORONI_CALIBRATION if calib_seed is None
                            else perturbed_calibration(calib_seed))
        self._lock = threading.RLock()
        self._regs = [0] * 256
        for reg, value in calibration_registers(self.calibration).items():
            self._regs[reg] = value
        self._regs[0xD0] = CHIP_ID
        self._regs[0xF0] = variant
        self._active: dict[str, Any] | None = None
        # the most recent measurements, for tests and a look from the REPL; bounded, so a
        # mock-mode node running for months does not keep every one
        self.measurements: deque[ChipMeasurement] = deque(maxlen=history)
        self.resets: list[float] = []
        self.triggers = 0
        self._reset_registers()

    # -- bus side ----------------------------------------------------------------------

    def read(self, reg: int, n: int) -> list[int]:
        """Burst read with auto-increment; status bits reflect a running measurement."""
        with self._lock:
            self._tick()
            out = []
            for i in range(n):
                r = (reg + i) & 0xFF
                out.append(self._status() if r == 0x1D else self._regs[r])
            return out

    def write(self, reg: int, data: list[int]) -> None:
        """A write: the first byte goes to `reg`, the rest are register/value pairs (as on the chip)."""
        with self._lock:
            self._tick()
            self._write_one(reg, data[0])
            rest = data[1:]
            for i in range(0, len(rest) - 1, 2):
                self._write_one(rest[i], rest[i + 1])

    # -- state -------------------------------------------------------------------------

    @property
    def measuring(self) -> bool:
        """True while a forced measurement runs."""
        with self._lock:
            self._tick()
            return self._active is not None

    def _reset_registers(self) -> None:
        for r in range(0x50, 0x76):
            self._regs[r] = 0
        # field data after reset: "skipped" codes for T, P, H; no gas result
        for r, v in zip(range(0x1D, 0x2E), (0, 0, 0x80, 0, 0, 0x80, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0),
                        strict=True):
            self._regs[r] = v
        self._active = None
        self._new_data = False

    def _write_one(self, reg: int, value: int) -> None:
        if reg == 0xE0:
            if value == 0xB6:
                self._reset_registers()
                self.resets.append(self.clock())
            return
        if not (0x50 <= reg <= 0x6D or 0x70 <= reg <= 0x75):
            return  # read-only or reserved: the chip ignores it
        self._regs[reg] = value
        if reg == 0x74:
            # Only forced mode is modelled; writing sleep mode stops a running measurement.
            if value & 0x03 == 0x01:
                self._start()
            elif value & 0x03 == 0x00:
                self._active = None

    def _status(self) -> int:
        status = self._regs[0x1D] & 0x0F
        if self._new_data:
            status |= 0x80
        if self._active is not None:
            status |= 0x20 | (0x40 if self._active["gas_enabled"] else 0)
        return status

    def _start(self) -> None:
        r = self._regs
        os_t, os_p, os_h = min((r[0x74] >> 5), 5), min((r[0x74] >> 2) & 0x07, 5), min(r[0x72] & 0x07, 5)
        nb_conv = r[0x71] & 0x0F
        run_gas = (r[0x71] >> 4) & 0x03
        gas_enabled = run_gas == (2 if self.variant == 1 else 1) and nb_conv <= 9
        wait_code = r[0x64 + min(nb_conv, 9)]
        gas_wait_ms = (wait_code & 0x3F) * (4 ** (wait_code >> 6))
        duration = measurement_duration_us(os_t, os_p, os_h) / 1e6
        if gas_enabled:
            duration += gas_wait_ms / 1000
        now = self.clock()
        self.triggers += 1
        self._new_data = False
        self._active = {
            "start": now, "end": now + duration * self.timing_scale, "os": (os_t, os_p, os_h),
            "gas_enabled": gas_enabled, "heater_on": not r[0x70] & 0x08, "nb_conv": min(nb_conv, 9),
            "res_heat": r[0x5A + min(nb_conv, 9)], "gas_wait_ms": gas_wait_ms,
        }

    def _tick(self) -> None:
        if self._active is not None and self.clock() >= self._active["end"]:
            self._complete(self._active)

    def _complete(self, a: dict[str, Any]) -> None:
        cond = self.room.at(a["end"])
        cal = self.calibration
        os_t, os_p, os_h = a["os"]
        adc_t = adc_p = SKIP_TP
        adc_h = SKIP_H
        t_fine = None
        if os_t:
            step = 1 << (5 - os_t)  # 16 + (osrs_t - 1) bits of resolution without the IIR filter
            adc_t = step * _closest(lambda k: compensate_temperature(k * step, cal)[0] / 100,
                                    0, (1 << 20) // step - 1, cond.temperature, avoid=SKIP_TP // step)
            t_fine = compensate_temperature(adc_t, cal)[1]
        if t_fine is None:
            # the chip still converts pressure and humidity against its internal temperature
            t_fine = compensate_temperature(_closest(
                lambda k: compensate_temperature(k, cal)[0] / 100, 0, (1 << 20) - 1, cond.temperature), cal)[1]
        if os_p:
            step = 1 << (5 - os_p)
            adc_p = step * _closest(lambda k: compensate_pressure(k * step, t_fine, cal) / 100,
                                    0, (1 << 20) // step - 1, cond.pressure, avoid=SKIP_TP // step)
        if os_h:
            adc_h = _closest(lambda k: compensate_humidity(k, t_fine, cal) / 1000, 0, 0xFFFF,
                             cond.humidity, avoid=SKIP_H)
        heater_temp = self._heater_temperature(a["res_heat"], cond.temperature) if a["heater_on"] else None
        heat_stable = (a["gas_enabled"] and heater_temp is not None and heater_temp >= MIN_HEATER_C
                       and a["gas_wait_ms"] >= HEATER_SETTLE_MS)
        gas_target = cond.gas_resistance if heat_stable else cond.gas_resistance * COLD_HEATER_FACTOR
        gas_adc = gas_range = 0
        if a["gas_enabled"]:
            gas_adc, gas_range = self._gas_code(gas_target)
        self._store(adc_t, adc_p, adc_h, gas_adc, gas_range, a, heat_stable)
        self.measurements.append(ChipMeasurement(
            started=a["start"], finished=a["end"], room=cond, os_t=os_t, os_p=os_p, os_h=os_h,
            adc_t=adc_t, adc_p=adc_p, adc_h=adc_h, gas_adc=gas_adc, gas_range=gas_range,
            gas_enabled=a["gas_enabled"], heat_stable=heat_stable, heater_temp=heater_temp,
            gas_wait_ms=a["gas_wait_ms"], gas_target=gas_target,
        ))

    def _store(self, adc_t: int, adc_p: int, adc_h: int, gas_adc: int, gas_range: int,
               a: dict[str, Any], heat_stable: bool) -> None:
        r = self._regs
        r[0x1D] = a["nb_conv"]
        r[0x1E] = (r[0x1E] + 1) & 0xFF  # sub-measurement index
        r[0x1F], r[0x20], r[0x21] = adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4
        r[0x22], r[0x23], r[0x24] = adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4
        r[0x25], r[0x26] = adc_h >> 8, adc_h & 0xFF
        flags = (0x20 if a["gas_enabled"] else 0) | (0x10 if heat_stable else 0)
        base = 0x2C if self.variant == 1 else 0x2A  # the BME688 reports gas in the second pair
        r[base], r[base + 1] = gas_adc >> 2, ((gas_adc & 0x03) << 6) | flags | gas_range
        r[0x74] &= ~0x03 & 0xFF  # forced mode returns to sleep by itself
        self._active = None
        self._new_data = True

    def _heater_temperature(self, code: int, ambient: float) -> float | None:
        return _heater_temperature(code, round(ambient), self.calibration)

    def _gas_code(self, target: float) -> tuple[int, int]:
        """(adc, range) whose compensated value is closest to target, preferring mid-scale codes."""
        cal = self.calibration
        options = []
        for gas_range in range(16):
            def f(adc: int, gas_range: int = gas_range) -> float:
                if self.variant == 1:
                    return gas_resistance_bme688(adc, gas_range)
                return float(gas_resistance_bme680(adc, gas_range, cal))
            adc = _closest(f, 0, 1023, target)
            options.append((round(abs(f(adc) - target) / target, 4), abs(adc - 512), adc, gas_range))
        _, _, adc, gas_range = min(options)
        return adc, gas_range


@functools.lru_cache(maxsize=1024)
def _heater_temperature(code: int, ambient: int, cal: Bme680Calibration) -> float | None:
    """The heater target (°C) a res_heat code stands for, or None if no 0..400 °C fits."""
    diff, temp = min((abs(heater_resistance_code(t, ambient, cal) - code), t) for t in range(401))
    return float(temp) if diff <= 2 else None


def _closest(f: Callable[[int], float], lo: int, hi: int, target: float, avoid: int | None = None) -> int:
    """The integer in lo..hi whose f is closest to target, for a monotonic f (bisection)."""
    increasing = f(hi) >= f(lo)

    def below(x: int) -> bool:
        return f(x) < target if increasing else f(x) > target

    a, b = lo, hi
    if not below(a):
        candidates = [a]
    elif below(b):
        candidates = [b]
    else:
        while b - a > 1:  # invariant: below(a) and not below(b)
            mid = (a + b) // 2
            if below(mid):
                a = mid
            else:
                b = mid
        candidates = [a, b]
    if avoid is not None:
        # the chip's "channel skipped" code must not stand for a real value here
        candidates = [c for c in candidates if c != avoid] or [avoid - 1, avoid + 1]
    return min(candidates, key=lambda x: abs(f(x) - target))
