"""Our BME680/BME688 driver: Bosch's integer compensation, forced mode, shared-bus defences.

The compensation functions follow Bosch's BME68x C API (v4.4, integer path, i.e. without
BME68X_USE_FPU), with C's truncating division. Python integers do not overflow, so we
skip Bosch's workarounds for int32/uint32 limits where they cost precision, and we do not
reproduce its overflows:
- pressure: Bosch divides before doubling once the dividend passes 2**30, losing the
  lowest bit; we double first (as Pimoroni's library does), so results may be 1 Pa above
  Bosch's (Pimoroni's vector adc_P 353485 gives 98712 Pa here, 98711 Pa in Bosch's C).
  Bosch's `var3` also wraps above ~1065 hPa when par_p10 is 30; ours does not.
- BME688 gas: Bosch computes `(10000 * var1) / var2 * 100`, which floors to 100 Ω (2 % at
  5 kΩ); we return `1e6 * var1 / var2`, the value of Bosch's floating-point path.
Temperature and BME680 gas equal Bosch's integer results exactly; humidity too, except
for raw codes far above 100 %RH, where Bosch's int32 intermediates wrap and we clamp.

Why the shared-bus checks: pi4 and pizero share one bus without arbitration, so the other
board may soft-reset the chip or rewrite its control registers at any moment. Around every
measurement the driver reads the chip id and the control registers back; a mismatch before
the trigger means re-initialise (soft reset, calibration, configuration), a mismatch after
the data was read means the data may have been taken under foreign settings and is thrown
away. Field data is read twice (three times on disagreement) because one flipped bit in a
block read is otherwise silent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hal.errors import BusError, DeviceUnavailable, HalConfigError, HalError, ImplausibleValue

log = logging.getLogger(__name__)

CHIP_ID = 0x61
REG_CHIP_ID = 0xD0
REG_VARIANT = 0xF0
REG_SOFT_RESET = 0xE0
SOFT_RESET_CMD = 0xB6
REG_COEFF1, LEN_COEFF1 = 0x8A, 23
REG_COEFF2, LEN_COEFF2 = 0xE1, 14
REG_COEFF3, LEN_COEFF3 = 0x00, 5
REG_FIELD0, LEN_FIELD = 0x1D, 17
REG_RES_HEAT0 = 0x5A
REG_GAS_WAIT0 = 0x64
REG_CTRL_GAS_0 = 0x70  # then ctrl_gas_1 0x71, ctrl_hum 0x72, 0x73, ctrl_meas 0x74, config 0x75
LEN_CTRL = 6
NEW_DATA = 0x80
GAS_VALID = 0x20
HEAT_STAB = 0x10
MODE_MASK = 0x03
FORCED = 0x01
VARIANT_BME680, VARIANT_BME688 = 0, 1
SKIPPED_TP = 0x80000  # what a T or P channel with oversampling 0 reads back
SKIPPED_H = 0x8000
OS_CYCLES = (0, 1, 2, 4, 8, 16)  # oversampling code -> conversions
RESET_PERIOD_S = 0.010  # Bosch waits 10 ms after a soft reset
POLL_PERIOD_S = 0.010  # Bosch's BME68X_PERIOD_POLL

# Bosch's BME680 gas range tables (integer path)
_GAS_LOOKUP1 = (2147483647, 2147483647, 2147483647, 2147483647, 2147483647, 2126008810,
                2147483647, 2130303777, 2147483647, 2147483647, 2143188679, 2136746228,
                2147483647, 2126008810, 2147483647, 2147483647)
_GAS_LOOKUP2 = (4096000000, 2048000000, 1024000000, 512000000, 255744255, 127110228,
                64000000, 32258064, 16016016, 8000000, 4000000, 2000000, 1000000, 500000,
                250000, 125000)

# Plausible results: the chip's operating range, which is also the quantity table's.
TEMPERATURE_RANGE = (-40.0, 85.0)
HUMIDITY_RANGE = (0.0, 100.0)
PRESSURE_RANGE = (300.0, 1100.0)
GAS_RANGE = (1.0, 1.0e9)


# -- C integer semantics ---------------------------------------------------------------

def _signed(value: int, bits: int) -> int:
    """Read an unsigned register value of `bits` bits as two's complement."""
    mask = (1 << bits) - 1
    value &= mask
    return value - (1 << bits) if value >> (bits - 1) else value


def _cdiv(a: int, b: int) -> int:
    """C integer division, which truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# -- calibration -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Bme680Calibration:
    """The factory calibration constants, named as in Bosch's `bme68x_calib_data`."""

    par_t1: int
    par_t2: int
    par_t3: int
    par_p1: int
    par_p2: int
    par_p3: int
    par_p4: int
    par_p5: int
    par_p6: int
    par_p7: int
    par_p8: int
    par_p9: int
    par_p10: int
    par_h1: int
    par_h2: int
    par_h3: int
    par_h4: int
    par_h5: int
    par_h6: int
    par_h7: int
    par_gh1: int
    par_gh2: int
    par_gh3: int
    res_heat_range: int
    res_heat_val: int
    range_sw_err: int

    @classmethod
    def from_registers(cls, coeff1: Sequence[int], coeff2: Sequence[int],
                       coeff3: Sequence[int]) -> Bme680Calibration:
        """Decode the 23 bytes from 0x8A, 14 from 0xE1 and 5 from 0x00 (Bosch's layout)."""
        if (len(coeff1), len(coeff2), len(coeff3)) != (LEN_COEFF1, LEN_COEFF2, LEN_COEFF3):
            raise ValueError("calibration blocks must be 23, 14 and 5 bytes long")
        c = list(coeff1) + list(coeff2) + list(coeff3)

        def u16(msb: int, lsb: int) -> int:
            return (c[msb] << 8) | c[lsb]

        def s16(msb: int, lsb: int) -> int:
            return _signed(u16(msb, lsb), 16)

        def s8(i: int) -> int:
            return _signed(c[i], 8)

        return cls(
            par_t1=u16(32, 31), par_t2=s16(1, 0), par_t3=s8(2),
            par_p1=u16(5, 4), par_p2=s16(7, 6), par_p3=s8(8), par_p4=s16(11, 10),
            par_p5=s16(13, 12), par_p6=s8(15), par_p7=s8(14), par_p8=s16(19, 18),
            par_p9=s16(21, 20), par_p10=c[22],
            par_h1=(c[25] << 4) | (c[24] & 0x0F), par_h2=(c[23] << 4) | (c[24] >> 4),
            par_h3=s8(26), par_h4=s8(27), par_h5=s8(28), par_h6=c[29], par_h7=s8(30),
            par_gh1=s8(35), par_gh2=s16(34, 33), par_gh3=s8(36),
            res_heat_range=(c[39] & 0x30) // 16, res_heat_val=s8(37),
            range_sw_err=_cdiv(_signed(c[41] & 0xF0, 8), 16),
        )


# -- Bosch's integer compensation ------------------------------------------------------

def compensate_temperature(adc_t: int, cal: Bme680Calibration) -> tuple[int, int]:
    """Raw 20-bit temperature -> (temperature in 0.01 °C, t_fine), as Bosch's calc_temperature."""
    var1 = (adc_t >> 3) - (cal.par_t1 << 1)
    var2 = (var1 * cal.par_t2) >> 11
    var3 = ((var1 >> 1) * (var1 >> 1)) >> 12
    var3 = (var3 * (cal.par_t3 << 4)) >> 14
    t_fine = var2 + var3
    return ((t_fine * 5) + 128) >> 8, t_fine


def compensate_pressure(adc_p: int, t_fine: int, cal: Bme680Calibration) -> int:
    """Raw 20-bit pressure -> pressure in Pa, as Bosch's calc_pressure."""
    var1 = (t_fine >> 1) - 64000
    var2 = ((((var1 >> 2) * (var1 >> 2)) >> 11) * cal.par_p6) >> 2
    var2 = var2 + ((var1 * cal.par_p5) << 1)
    var2 = (var2 >> 2) + (cal.par_p4 << 16)
    var1 = (((((var1 >> 2) * (var1 >> 2)) >> 13) * (cal.par_p3 << 5)) >> 3) + ((cal.par_p2 * var1) >> 1)
    var1 = var1 >> 18
    var1 = ((32768 + var1) * cal.par_p1) >> 15
    if var1 == 0:
        raise ImplausibleValue("pressure compensation divides by zero (calibration corrupt?)")
    # Bosch divides before doubling when this exceeds 2**30, to stay inside int32, which
    # loses the lowest bit; without that limit we always double first.
    pressure = _cdiv((((1048576 - adc_p) - (var2 >> 12)) * 3125) << 1, var1)
    var1 = (cal.par_p9 * (((pressure >> 3) * (pressure >> 3)) >> 13)) >> 12
    var2 = ((pressure >> 2) * cal.par_p8) >> 13
    p8 = pressure >> 8
    var3 = (p8 * p8 * p8 * cal.par_p10) >> 17
    return pressure + ((var1 + var2 + var3 + (cal.par_p7 << 7)) >> 4)


def compensate_humidity(adc_h: int, t_fine: int, cal: Bme680Calibration) -> int:
    """Raw 16-bit humidity -> humidity in 0.001 %RH, clamped to 0..100 %, as Bosch's calc_humidity."""
    temp_scaled = ((t_fine * 5) + 128) >> 8
    var1 = (adc_h - cal.par_h1 * 16) - (_cdiv(temp_scaled * cal.par_h3, 100) >> 1)
    var2 = (cal.par_h2 * (_cdiv(temp_scaled * cal.par_h4, 100)
                          + _cdiv((temp_scaled * _cdiv(temp_scaled * cal.par_h5, 100)) >> 6, 100)
                          + (1 << 14))) >> 10
    var3 = var1 * var2
    var4 = cal.par_h6 << 7
    var4 = (var4 + _cdiv(temp_scaled * cal.par_h7, 100)) >> 4
    var5 = ((var3 >> 14) * (var3 >> 14)) >> 10
    var6 = (var4 * var5) >> 1
    hum = (((var3 + var6) >> 10) * 1000) >> 12
    return min(max(hum, 0), 100000)


def gas_resistance_bme680(adc: int, gas_range: int, cal: Bme680Calibration) -> int:
    """BME680 (variant 0) gas ADC + range -> Ω, Bosch's integer formula with the range tables."""
    var1 = ((1340 + 5 * cal.range_sw_err) * _GAS_LOOKUP1[gas_range]) >> 16
    var2 = ((adc << 15) - 16777216) + var1
    if var2 == 0:
        raise ImplausibleValue("gas compensation divides by zero")
    var3 = (_GAS_LOOKUP2[gas_range] * var1) >> 9
    return _cdiv(var3 + (var2 >> 1), var2) & 0xFFFFFFFF


def gas_resistance_bme688(adc: int, gas_range: int) -> float:
    """BME688 (variant 1) gas ADC + range -> Ω; Bosch's formula without its 100 Ω flooring."""
    var1 = 262144 >> gas_range
    var2 = 4096 + (adc - 512) * 3
    return 1_000_000 * var1 / var2


def heater_resistance_code(target_c: int, ambient_c: int, cal: Bme680Calibration) -> int:
    """res_heat_x register value for a heater target, as Bosch's integer calc_res_heat."""
    temp = min(target_c, 400)
    var1 = _cdiv(ambient_c * cal.par_gh3, 1000) * 256
    var2 = (cal.par_gh1 + 784) * _cdiv(_cdiv((cal.par_gh2 + 154009) * temp * 5, 100) + 3276800, 10)
    var3 = var1 + _cdiv(var2, 2)
    var4 = _cdiv(var3, cal.res_heat_range + 4)
    var5 = 131 * cal.res_heat_val + 65536
    res_x100 = (_cdiv(var4, var5) - 250) * 34
    return _cdiv(res_x100 + 50, 100) & 0xFF


def gas_wait_code(duration_ms: int) -> int:
    """gas_wait_x register value: 6-bit count times a 1/4/16/64 multiplier, as Bosch's calc_gas_wait."""
    if duration_ms >= 0xFC0:
        return 0xFF
    factor = 0
    while duration_ms > 0x3F:
        duration_ms //= 4
        factor += 1
    return duration_ms + factor * 64


def measurement_duration_us(os_t: int, os_p: int, os_h: int) -> int:
    """Bosch's forced-mode TPH + gas conversion time in µs, without the heater time."""
    cycles = OS_CYCLES[os_t] + OS_CYCLES[os_p] + OS_CYCLES[os_h]
    return cycles * 1963 + 477 * 4 + 477 * 5 + 1000


# -- the driver ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Bme680Measurement:
    """One compensated forced-mode measurement."""

    temperature: float  # °C
    humidity: float  # %RH
    pressure: float  # hPa
    gas_resistance: float  # Ω
    heat_stable: bool
    gas_valid: bool


class _ForeignChange(HalError):
    """The chip is not in the state this driver left it in (another master, a reset)."""


class Bme680:
    """A BME680/BME688 on any object with smbus2's methods; configure lazily, measure in forced mode."""

    def __init__(self, bus: Any, address: int = 0x77, sleep: Callable[[float], None] = time.sleep,
                 *, heater_temp: int = 320, heater_ms: int = 150, os_t: int = 4, os_p: int = 3,
                 os_h: int = 2, attempts: int = 3, ambient: int = 25) -> None:
        if address not in (0x76, 0x77):
            raise HalConfigError(f"BME680 address must be 0x76 or 0x77, got {address!r}")
        if not 200 <= heater_temp <= 400:
            raise HalConfigError(f"heater_temp must be 200..400 °C, got {heater_temp!r}")
        if not 1 <= heater_ms <= 4032:
            raise HalConfigError(f"heater_ms must be 1..4032 ms, got {heater_ms!r}")
        for label, os_code in (("os_t", os_t), ("os_p", os_p), ("os_h", os_h)):
            if not 1 <= os_code <= 5:  # 0 would skip the channel, which measure() rejects
                raise HalConfigError(f"{label} must be an oversampling code 1..5, got {os_code!r}")
        if attempts < 1:
            raise HalConfigError(f"attempts must be >= 1, got {attempts!r}")
        self.bus = bus
        self.address = address
        self.heater_temp = heater_temp
        self.heater_ms = heater_ms
        self.os_t, self.os_p, self.os_h = os_t, os_p, os_h
        self.attempts = attempts
        self._sleep = sleep
        self._ambient = ambient  # °C used for the heater resistance; the last measured value
        self.variant: int | None = None
        self.calibration: Bme680Calibration | None = None
        self._expected_ctrl: dict[int, int] = {}
        self._expected_heat: tuple[int, int] = (0, 0)
        self._initialised = False
        self.stats = {"measurements": 0, "inits": 0, "foreign_changes": 0, "timeouts": 0,
                      "field_mismatches": 0}

    # -- public ------------------------------------------------------------------------

    def wait_time(self) -> float:
        """Seconds from trigger to data: Bosch's measurement duration plus the heater duration."""
        return measurement_duration_us(self.os_t, self.os_p, self.os_h) / 1e6 + self.heater_ms / 1000

    def init(self) -> None:
        """Check the chip id, soft-reset, read variant and calibration, write our configuration."""
        self._check_chip_id()  # before the reset command: never send it to some other chip
        self._write(REG_SOFT_RESET, [SOFT_RESET_CMD])
        self._sleep(RESET_PERIOD_S)
        self._check_chip_id()
        self.variant = self._read_byte(REG_VARIANT)
        if self.variant not in (VARIANT_BME680, VARIANT_BME688):
            raise DeviceUnavailable(f"BME68x at 0x{self.address:02x}: unknown variant 0x{self.variant:02x}")
        self.calibration = self._read_calibration()
        self._configure()
        self._initialised = True
        self.stats["inits"] += 1

    def measure(self) -> Bme680Measurement:
        """Trigger, wait Bosch's duration, read, verify; re-initialise after foreign changes."""
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                if not self._initialised:
                    self.init()
                result = self._measure_once()
            except (_ForeignChange, ImplausibleValue) as exc:
                # Both mean "not the chip state we configured" (a reset, foreign settings, a
                # corrupted transfer): start again from a soft reset.
                self.stats["foreign_changes"] += 1
                log.info("BME680 0x%02x: %s (attempt %d); re-initialising", self.address, exc, attempt + 1)
                self._initialised = False
                last = exc
                continue
            self.stats["measurements"] += 1
            return result
        if isinstance(last, ImplausibleValue):
            raise last
        raise DeviceUnavailable(f"BME680 0x{self.address:02x}: no consistent measurement after "
                                f"{self.attempts} attempts; last: {last}")

    # -- one measurement ---------------------------------------------------------------

    def _measure_once(self) -> Bme680Measurement:
        assert self.calibration is not None
        self._update_heater_for_ambient()
        self._check_chip_id()
        self._verify_config(before=True)
        # ctrl_meas last: the chip latches ctrl_hum and the heater settings on this write
        self._write(0x74, [self._ctrl_meas(FORCED)])
        self._sleep(self.wait_time())
        status = self._poll_new_data()
        field = self._read_field()
        self._verify_config(before=False)
        if not field[0] & NEW_DATA:
            raise _ForeignChange(f"new_data cleared in field data (status 0x{status:02x} before)")
        return self._compensate(field)

    def _poll_new_data(self) -> int:
        # Bounded: a quarter of the nominal duration plus 100 ms covers a slow chip.
        polls = int((0.25 * self.wait_time() + 0.1) / POLL_PERIOD_S) + 1
        for _ in range(polls):
            status = self._read_byte(REG_FIELD0)
            if status & NEW_DATA:
                return status
            self._sleep(POLL_PERIOD_S)
        self.stats["timeouts"] += 1
        raise _ForeignChange(f"no new data {polls * POLL_PERIOD_S * 1000:.0f} ms after the expected "
                             "end of the measurement (chip reset?)")

    def _read_field(self) -> list[int]:
        first = self._read_block(REG_FIELD0, LEN_FIELD)
        second = self._read_block(REG_FIELD0, LEN_FIELD)
        if first == second:
            return first
        self.stats["field_mismatches"] += 1
        third = self._read_block(REG_FIELD0, LEN_FIELD)
        if third in (first, second):
            return third
        raise _ForeignChange("three reads of the field data disagree")

    def _compensate(self, f: list[int]) -> Bme680Measurement:
        cal = self.calibration
        assert cal is not None
        adc_p = (f[2] << 12) | (f[3] << 4) | (f[4] >> 4)
        adc_t = (f[5] << 12) | (f[6] << 4) | (f[7] >> 4)
        adc_h = (f[8] << 8) | f[9]
        if adc_t == SKIPPED_TP or adc_p == SKIPPED_TP or adc_h == SKIPPED_H:
            raise ImplausibleValue(f"skipped-channel value in the data (T 0x{adc_t:05x}, P 0x{adc_p:05x}, "
                                 f"H 0x{adc_h:04x}): another master changed the oversampling")
        lo = 15 if self.variant == VARIANT_BME688 else 13
        gas_adc = (f[lo] << 2) | (f[lo + 1] >> 6)
        gas_range = f[lo + 1] & 0x0F
        centi, t_fine = compensate_temperature(adc_t, cal)
        pressure = compensate_pressure(adc_p, t_fine, cal) / 100.0
        humidity = compensate_humidity(adc_h, t_fine, cal) / 1000.0
        if self.variant == VARIANT_BME688:
            gas = gas_resistance_bme688(gas_adc, gas_range)
        else:
            gas = float(gas_resistance_bme680(gas_adc, gas_range, cal))
        result = Bme680Measurement(
            temperature=centi / 100.0, humidity=humidity, pressure=pressure, gas_resistance=gas,
            heat_stable=bool(f[lo + 1] & HEAT_STAB), gas_valid=bool(f[lo + 1] & GAS_VALID),
        )
        _check_range(result)
        self._ambient = max(-128, min(127, round(result.temperature)))
        return result

    # -- configuration -----------------------------------------------------------------

    def _ctrl_meas(self, mode: int) -> int:
        return (self.os_t << 5) | (self.os_p << 2) | mode

    def _configure(self) -> None:
        assert self.calibration is not None
        run_gas = 0x20 if self.variant == VARIANT_BME688 else 0x10
        # 0x70 heater on, 0x71 run_gas + profile 0, 0x72 osrs_h, 0x73 untouched, 0x74 osrs_t/p
        # in sleep mode, 0x75 filter off (an IIR filter only adds lag at our sparse rate).
        self._expected_ctrl = {0x70: 0x00, 0x71: run_gas, 0x72: self.os_h, 0x74: self._ctrl_meas(0),
                               0x75: 0x00}
        heat = (heater_resistance_code(self.heater_temp, self._ambient, self.calibration),
                gas_wait_code(self.heater_ms))
        self._expected_heat = heat
        self._write_pairs([(REG_RES_HEAT0, heat[0]), (REG_GAS_WAIT0, heat[1]),
                           (0x70, 0x00), (0x71, run_gas), (0x72, self.os_h),
                           (0x75, 0x00), (0x74, self._ctrl_meas(0))])

    def _update_heater_for_ambient(self) -> None:
        assert self.calibration is not None
        code = heater_resistance_code(self.heater_temp, self._ambient, self.calibration)
        if code != self._expected_heat[0]:
            self._write(REG_RES_HEAT0, [code])
            self._expected_heat = (code, self._expected_heat[1])

    def _verify_config(self, before: bool) -> None:
        ctrl = self._read_block(REG_CTRL_GAS_0, LEN_CTRL)
        heat = (self._read_byte(REG_RES_HEAT0), self._read_byte(REG_GAS_WAIT0))
        if before and ctrl[4] & MODE_MASK:
            raise _ForeignChange("the chip is already measuring (another master triggered it)")
        for reg, want in self._expected_ctrl.items():
            have = ctrl[reg - REG_CTRL_GAS_0]
            if reg == 0x74:
                have &= ~MODE_MASK  # forced mode falls back to sleep by itself
            if have != want:
                where = "before the trigger" if before else "after the measurement"
                raise _ForeignChange(f"register 0x{reg:02x} is 0x{have:02x}, expected 0x{want:02x} {where}")
        if heat != self._expected_heat:
            raise _ForeignChange(f"heater registers are {heat}, expected {self._expected_heat}")

    def _check_chip_id(self) -> None:
        chip_id = self._read_byte(REG_CHIP_ID)
        if chip_id != CHIP_ID:
            raise DeviceUnavailable(f"no BME68x at 0x{self.address:02x}: chip id 0x{chip_id:02x}, "
                                    f"expected 0x{CHIP_ID:02x}")

    def _read_calibration(self) -> Bme680Calibration:
        # Read twice: a flipped bit here would skew every later value without any sign.
        for _ in range(3):
            a = [self._read_block(REG_COEFF1, LEN_COEFF1), self._read_block(REG_COEFF2, LEN_COEFF2),
                 self._read_block(REG_COEFF3, LEN_COEFF3)]
            b = [self._read_block(REG_COEFF1, LEN_COEFF1), self._read_block(REG_COEFF2, LEN_COEFF2),
                 self._read_block(REG_COEFF3, LEN_COEFF3)]
            if a == b:
                return Bme680Calibration.from_registers(*a)
        raise _ForeignChange("calibration reads disagree")

    # -- bus access: every OSError becomes a typed error -------------------------------

    def _read_byte(self, reg: int) -> int:
        try:
            return int(self.bus.read_byte_data(self.address, reg))
        except HalError:
            raise
        except OSError as exc:
            raise BusError(f"BME680 0x{self.address:02x}: read of 0x{reg:02x} failed: {exc}") from exc

    def _read_block(self, reg: int, n: int) -> list[int]:
        try:
            data = list(self.bus.read_i2c_block_data(self.address, reg, n))
        except HalError:
            raise
        except OSError as exc:
            raise BusError(f"BME680 0x{self.address:02x}: read of {n} bytes at 0x{reg:02x} failed: "
                           f"{exc}") from exc
        if len(data) != n:
            raise BusError(f"BME680 0x{self.address:02x}: short read at 0x{reg:02x} ({len(data)}/{n})")
        return data

    def _write(self, reg: int, data: list[int]) -> None:
        try:
            if len(data) == 1:
                self.bus.write_byte_data(self.address, reg, data[0])
            else:
                self.bus.write_i2c_block_data(self.address, reg, data)
        except HalError:
            raise
        except OSError as exc:
            raise BusError(f"BME680 0x{self.address:02x}: write at 0x{reg:02x} failed: {exc}") from exc

    def _write_pairs(self, pairs: list[tuple[int, int]]) -> None:
        # The BME680 takes multi-byte I2C writes as register/value pairs, not auto-increment.
        flat = [pairs[0][1]]
        for reg, value in pairs[1:]:
            flat += [reg, value]
        self._write(pairs[0][0], flat)


def _check_range(m: Bme680Measurement) -> None:
    for name, value, (low, high) in (("temperature", m.temperature, TEMPERATURE_RANGE),
                                     ("humidity", m.humidity, HUMIDITY_RANGE),
                                     ("pressure", m.pressure, PRESSURE_RANGE),
                                     ("gas_resistance", m.gas_resistance, GAS_RANGE)):
        if not low <= value <= high:
            raise ImplausibleValue(f"BME680 {name} {value} outside {low}..{high}")
