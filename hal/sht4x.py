"""Sensirion SHT4x (SHT40/41/45) and SHT3x (SHT30/31/35) humidity and temperature over I2C.

A measurement is a command, a wait of the datasheet's maximum measurement duration, then a
6-byte read: T (2) + CRC, RH (2) + CRC, each word checked with Sensirion's CRC-8. SHT4x:
single-byte commands 0xFD/0xF6/0xE0 (high/medium/low precision), at most 8.3/4.5/1.6 ms;
T = -45 + 175 * S/65535, RH = -6 + 125 * S/65535 cropped to 0..100 (Sensirion SHT4x
datasheet, command table, timing table, section 4.5). SHT3x: single shot without clock
stretching 0x2400/0x240B/0x2416, at most 15/6/4 ms; same T, RH = 100 * S/65535 (SHT3x-DIS
datasheet, single shot commands, timing table, conversion of signal output).

Neither chip stretches the clock here: a read while it still measures is NACKed, and the
bus's retries (with their backoff) cover a chip slower than the datasheet. A word failing
its CRC is measured again once (a flipped bit on a shared bus is transient). When the
measurement command gets no ACK, the other model's serial-number command is tried once,
so a config naming the wrong model says so instead of "no chip".
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.crc import sensirion_crc8
from hal.driver import SensorDriver, check_int
from hal.errors import HalConfigError, ReadingError
from hal.i2c import i2c_messages, root_errno
from hal.readings import Reading
from hal.sensor import SHT_ADDRESSES

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

SERIAL_WAIT_S = 0.01  # Sensirion's reference drivers wait this long after the serial-number command
PRECISIONS = ("high", "medium", "low")


def sht_temperature(raw: int) -> float:
    """°C from a temperature word (the same formula for SHT3x and SHT4x)."""
    return -45.0 + 175.0 * raw / 65535.0


def sht4x_humidity(raw: int) -> float:
    """%RH from an SHT4x humidity word, cropped to 0..100 as the datasheet recommends."""
    return min(100.0, max(0.0, -6.0 + 125.0 * raw / 65535.0))


def sht3x_humidity(raw: int) -> float:
    """%RH from an SHT3x humidity word."""
    return 100.0 * raw / 65535.0


@dataclass(frozen=True)
class ShtModel:
    """What differs between the two families."""

    label: str
    measure: dict[str, tuple[int, ...]]  # precision -> command bytes
    max_s: dict[str, float]  # precision -> maximum measurement duration
    serial: tuple[int, ...]  # read-serial-number command
    humidity: Callable[[int], float]


MODELS: dict[str, ShtModel] = {
    "sht4x": ShtModel("SHT4x", {"high": (0xFD,), "medium": (0xF6,), "low": (0xE0,)},
                      {"high": 0.0083, "medium": 0.0045, "low": 0.0016}, (0x89,), sht4x_humidity),
    "sht3x": ShtModel("SHT3x", {"high": (0x24, 0x00), "medium": (0x24, 0x0B), "low": (0x24, 0x16)},
                      {"high": 0.015, "medium": 0.006, "low": 0.004}, (0x37, 0x80), sht3x_humidity),
}


def check_words(data: list[int]) -> list[tuple[int, str | None]]:
    """(word, None) for each CRC-checked 16-bit word of a Sensirion read, or (word, problem)."""
    out = []
    for i in range(0, len(data) - 2, 3):
        msb, lsb, crc = data[i], data[i + 1], data[i + 2]
        computed = sensirion_crc8((msb, lsb))
        problem = None if computed == crc else f"got {msb:02x} {lsb:02x} with CRC {crc:02x}, expected {computed:02x}"
        out.append(((msb << 8) | lsb, problem))
    return out


class ShtSensor(SensorDriver[dict[str, float | str]]):
    """An SHT4x or SHT3x on an I2C bus of the node: one single-shot measurement per read; close()
    has nothing to release (the bus is the context's)."""

    kind = "sht4x"
    quantities = ("temperature", "humidity")

    def __init__(self, ctx: HalContext, name: str, bus: int = 1, address: int = 0x44, model: str = "sht4x",
                 precision: str = "high", *, sleep: Callable[[float], None] | None = None,
                 attempts: int = 2) -> None:
        check_int(name, "bus", bus, 0)
        if model not in MODELS:
            raise HalConfigError(f"{name}: model must be one of {', '.join(MODELS)}, got {model!r}")
        if address not in SHT_ADDRESSES[model]:
            raise HalConfigError(f"{name}: an {model.upper()} answers at "
                                 f"{' or '.join(hex(a) for a in SHT_ADDRESSES[model])}, not {address!r}")
        if precision not in PRECISIONS:
            raise HalConfigError(f"{name}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        check_int(name, "attempts", attempts, 1)
        super().__init__(ctx, name, log, MODELS[model].label, "crc_errors")
        self.bus_number = bus
        self.address = address
        self.model = model
        self.precision = precision
        self.attempts = attempts
        self._spec = MODELS[model]
        self._sleep = sleep or ctx.sleep
        self._msg = i2c_messages()
        self._stage = ""
        self._hint: str | None = None  # the wrong-model check, made once per failure streak

    def __repr__(self) -> str:
        return (f"ShtSensor(name={self.name!r}, model={self.model!r}, bus={self.bus_number}, "
                f"address=0x{self.address:02x})")

    @property
    def where(self) -> str:
        """0x44 on bus 1."""
        return f"0x{self.address:02x} on bus {self.bus_number}"

    def serial_number(self) -> int:
        """The chip's 32-bit serial number (OSError/HalError when it does not answer, ValueError on CRC)."""
        with self._lock:
            return self._serial(self._ctx.i2c_bus(self.bus_number), self._spec)

    # -- measuring ---------------------------------------------------------------------

    def _measure(self) -> dict[str, float | str]:
        """quantity -> value, or the reason that quantity has none (a CRC error)."""
        self._stage = "bus"
        bus = self._ctx.i2c_bus(self.bus_number)
        command = self._spec.measure[self.precision]
        values: dict[str, float | str] = {}
        for _ in range(self.attempts):
            self._stage = "command"
            self._write(bus, command)
            self._sleep(self._spec.max_s[self.precision])
            self._stage = "read"
            (t_raw, t_bad), (rh_raw, rh_bad) = check_words(self._read(bus, 6))
            values = {
                "temperature": sht_temperature(t_raw) if t_bad is None else f"CRC error in the temperature word: {t_bad}",
                "humidity": self._spec.humidity(rh_raw) if rh_bad is None else f"CRC error in the humidity word: {rh_bad}",
            }
            if t_bad is None and rh_bad is None:
                break
            self.stats["crc_errors"] += 1
            log.debug("%s: %s; measuring again", self.name, t_bad or rh_bad)
        return values

    def _write(self, bus: Any, data: tuple[int, ...]) -> None:
        bus.i2c_rdwr(self._msg.write(self.address, list(data)))

    def _read(self, bus: Any, n: int) -> list[int]:
        msg = self._msg.read(self.address, n)
        bus.i2c_rdwr(msg)
        return list(msg)

    def _serial(self, bus: Any, spec: ShtModel) -> int:
        self._write(bus, spec.serial)
        self._sleep(SERIAL_WAIT_S)
        (high, high_bad), (low, low_bad) = check_words(self._read(bus, 6))
        if high_bad or low_bad:
            raise ValueError(f"serial number CRC error: {high_bad or low_bad}")
        return (high << 16) | low

    # -- reporting ---------------------------------------------------------------------

    def _explain(self, exc: BaseException) -> str:
        label, cmd = self._spec.label, "".join(f"{b:02x}" for b in self._spec.measure[self.precision])
        if root_errno(exc) != errno.EREMOTEIO:
            return super()._explain(exc)
        if self._stage == "read":
            wait_ms = self._spec.max_s[self.precision] * 1000
            return (f"no ACK from the {label} at {self.where} for the result, {wait_ms:g} ms after "
                    f"measurement command 0x{cmd} (still measuring, or reset?) [{exc}]")
        if self._hint is None:
            self._hint = self._other_model() or "nothing answers there (check wiring, power and address)"
        return f"no ACK from {self.where} to the {label} measurement command 0x{cmd}: {self._hint} [{exc}]"

    def _other_model(self) -> str:
        """'an SHT3x answers there ...' when the other family's serial-number command works."""
        for key, spec in MODELS.items():
            if key == self.model:
                continue
            try:
                serial = self._serial(self._ctx.i2c_bus(self.bus_number), spec)
            except Exception:  # only a diagnosis: whatever stops it, the answer is "not that model"
                continue
            return f"an {spec.label} answers there (serial 0x{serial:08x}): set model = \"{key}\""
        return ""

    def _report(self, values: dict[str, float | str]) -> list[Reading]:
        """Temperature and humidity; a word that failed its CRC fails its quantity alone."""
        self._hint = None
        ts = self._clock()
        node = self._ctx.node
        out = []
        problems = []
        for quantity in self.quantities:
            value = values[quantity]
            if isinstance(value, str):
                problems.append(value)
                out.append(Reading.failed(node, self.name, quantity, ts, value))
                continue
            try:
                out.append(Reading.measured(node, self.name, quantity, round(value, 2), ts))
            except ReadingError as exc:  # the chip reads to 125 °C, the readings table to 85 °C
                problems.append(str(exc))
                out.append(Reading.failed(node, self.name, quantity, ts, str(exc)))
        if problems:
            self.stats["failures"] += 1
            self._availability.failed(self.part, "; ".join(problems))
        else:
            self._availability.recovered(self.part)
        return out
