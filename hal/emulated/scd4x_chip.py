"""A Sensirion SCD40/SCD41 at command level, in idle and periodic measurement.

From the SCD4x datasheet and Sensirion's embedded-i2c-scd4x driver (execution times): the
first measurement completes 5 s after start_periodic_measurement, then one every 5 s; while
measuring only read_measurement, get_data_ready_status, stop_periodic_measurement and
set_ambient_pressure are accepted; the chip answers 500 ms after stop (30 ms after reinit)
and 1 s after power-up; "if no data is available in the buffer, the sensor returns a NACK".
This model NACKs in each of those cases, and also unknown commands, argument words with a
wrong CRC and any read with nothing to send. Every word it sends carries Sensirion's CRC-8.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.context import NODE_DEVICE_HISTORY
from hal.crc import sensirion_crc8
from hal.emulated import HISTORY
from hal.emulated.environment import RoomConditions

if TYPE_CHECKING:
    from hal.context import HalContext

START_PERIODIC = 0x21B1
READ_MEASUREMENT = 0xEC05
STOP_PERIODIC = 0x3F86
SET_TEMPERATURE_OFFSET = 0x241D
GET_TEMPERATURE_OFFSET = 0x2318
SET_SENSOR_ALTITUDE = 0x2427
GET_SENSOR_ALTITUDE = 0x2322
SET_AMBIENT_PRESSURE = 0xE000
GET_DATA_READY = 0xE4B8
GET_SERIAL = 0x3682
REINIT = 0x3646

# command -> (accepted while measuring, words it takes, seconds until done / its answer is ready)
COMMANDS: dict[int, tuple[bool, int, float]] = {
    START_PERIODIC: (False, 0, 0.0),
    READ_MEASUREMENT: (True, 0, 0.001),
    STOP_PERIODIC: (True, 0, 0.5),
    SET_TEMPERATURE_OFFSET: (False, 1, 0.001),
    GET_TEMPERATURE_OFFSET: (False, 0, 0.001),
    SET_SENSOR_ALTITUDE: (False, 1, 0.001),
    GET_SENSOR_ALTITUDE: (False, 0, 0.001),
    SET_AMBIENT_PRESSURE: (True, 1, 0.001),
    GET_DATA_READY: (True, 0, 0.001),
    GET_SERIAL: (False, 0, 0.001),
    REINIT: (False, 0, 0.030),
}
INTERVAL_S = 5.0  # signal update interval in periodic measurement
POWER_UP_S = 1.0  # from power-up until the chip answers
DEFAULT_OFFSET_WORD = round(4.0 * 65535 / 175)  # the factory temperature offset, 4 °C
DATASHEET_SERIAL = 0xF8969F073BBE  # the get_serial_number example: 273325796834238
READY, NOT_READY = 0x8006, 0x8000  # only the low 11 bits matter: non-zero = data ready
EPSILON_S = 1e-6  # float clocks: "1 ms later" must count as 1 ms later


def nack(why: str) -> OSError:
    """The error a real bus gives when the chip does not acknowledge."""
    return OSError(errno.EREMOTEIO, f"SCD4x NACK: {why}")


def word_bytes(word: int) -> list[int]:
    """A 16-bit word as the chip sends it: MSB, LSB, CRC-8."""
    msb, lsb = (word >> 8) & 0xFF, word & 0xFF
    return [msb, lsb, sensirion_crc8((msb, lsb))]


@dataclass(frozen=True, slots=True)
class Scd4xChipMeasurement:
    """One periodic measurement: when it completed, the room then, and the words it produced."""

    finished: float
    room: RoomConditions
    co2: int
    temperature_word: int
    humidity_word: int


class EmulatedScd4x:
    """Command model of an SCD4x (a CommandChip for hal.emulated.bus)."""

    def __init__(self, room: Any, clock: Callable[[], float] = time.time, serial: int = DATASHEET_SERIAL,
                 self_heating: float = 4.0, interval: float = INTERVAL_S, history: int = HISTORY) -> None:
        self.room = room
        self.clock = clock
        self.serial = serial
        # The chip reads its own heat as well as the room's; the temperature offset takes it off.
        self.self_heating = self_heating
        self.interval = interval
        self._lock = threading.RLock()
        self.commands: deque[tuple[float, int, tuple[int, ...]]] = deque(maxlen=history)
        self.measurements: deque[Scd4xChipMeasurement] = deque(maxlen=history)
        self.power_cycles = 0
        self._corrupt: list[tuple[int | None, int]] = []  # (command or None for any, word index)
        self._booting_until = 0.0  # made long ago: answers at once
        self._busy_until = 0.0
        self._pending: list[int] | None = None
        self._pending_for = 0  # the command whose answer is pending
        self._pending_at = 0.0
        self._periodic = False
        self._started = 0.0
        self._delivered = 0
        self._load_settings()

    # -- bus side (CommandChip) ---------------------------------------------------------

    def command(self, data: list[int]) -> None:
        """One write message: a 16-bit command, MSB first, then any argument words with CRC."""
        with self._lock:
            now = self.clock()
            if len(data) < 2:
                raise nack(f"a command is two bytes, got {len(data)}")
            code = (data[0] << 8) | data[1]
            self.commands.append((now, code, tuple(data[2:])))
            if now < self._booting_until:
                raise nack("powering up")
            spec = COMMANDS.get(code)
            if spec is None:
                raise nack(f"unknown command 0x{code:04x}")
            if now < self._busy_until:
                raise nack(f"busy with the previous command until {self._busy_until - now:.3f} s from now")
            during_measurement, n_words, exec_s = spec
            if self._periodic and not during_measurement:
                raise nack(f"command 0x{code:04x} is not accepted during periodic measurement")
            args = self._arguments(code, data[2:], n_words)
            self._pending = None  # a new command drops what the previous one left to read
            self._pending_for = code
            self._pending_at = now + exec_s
            self._execute(code, args, now, exec_s)

    def read_raw(self, n: int) -> list[int]:
        """One read message: what the last command left, once; NACK when there is nothing."""
        with self._lock:
            now = self.clock()
            if now < self._booting_until:
                raise nack("powering up")
            if self._pending is None:
                raise nack("nothing to read")
            if now + EPSILON_S < self._pending_at:
                raise nack("command still executing")
            if n > len(self._pending):
                raise nack(f"read of {n} bytes, only {len(self._pending)} to send")
            out = list(self._pending[:n])
            self._pending = None
            keep = []
            for command, word in self._corrupt:
                if command is None or command == self._pending_for:
                    if 3 * word + 2 < n:
                        out[3 * word + 2] ^= 0xFF
                else:
                    keep.append((command, word))
            self._corrupt = keep
            return out

    def read(self, reg: int, n: int) -> list[int]:
        """Register access: the SCD4x has no registers; a one-byte command is NACKed."""
        raise nack("the SCD4x takes 16-bit commands through i2c_rdwr, not register reads")

    def write(self, reg: int, data: list[int]) -> None:
        """Register access: the bytes would be a command, so pass them on as one."""
        self.command([reg, *data])

    # -- test hooks ---------------------------------------------------------------------

    def power_cycle(self) -> None:
        """Power lost and back: 1 s of NACKs, then idle with the factory settings."""
        with self._lock:
            self.power_cycles += 1
            self._booting_until = self.clock() + POWER_UP_S
            self._busy_until = 0.0
            self._pending = None
            self._periodic = False
            self._delivered = 0
            self._load_settings()

    def corrupt_crc(self, word: int = 0, command: int | None = None) -> None:
        """Get the CRC of one word (0 = first) wrong in the next read (of `command`'s answer, if given)."""
        with self._lock:
            self._corrupt.append((command, word))

    @property
    def measuring(self) -> bool:
        """True in periodic measurement."""
        with self._lock:
            return self._periodic

    def data_ready(self) -> bool:
        """True when a measurement waits to be read (what get_data_ready_status reports)."""
        with self._lock:
            return self._completed(self.clock()) > self._delivered

    # -- state --------------------------------------------------------------------------

    def _load_settings(self) -> None:
        self.offset_word = DEFAULT_OFFSET_WORD
        self.altitude = 0
        self.pressure_word: int | None = None

    def _arguments(self, code: int, rest: list[int], n_words: int) -> list[int]:
        if len(rest) != 3 * n_words:
            raise nack(f"command 0x{code:04x} takes {n_words} word(s) with CRC, got {len(rest)} bytes")
        words = []
        for i in range(n_words):
            msb, lsb, crc = rest[3 * i: 3 * i + 3]
            if sensirion_crc8((msb, lsb)) != crc:
                raise nack(f"CRC mismatch in the argument of command 0x{code:04x}")
            words.append((msb << 8) | lsb)
        return words

    def _execute(self, code: int, args: list[int], now: float, exec_s: float) -> None:
        if code == START_PERIODIC:
            self._periodic, self._started, self._delivered = True, now, 0
        elif code == STOP_PERIODIC:
            self._periodic = False
            self._busy_until = now + exec_s
        elif code == REINIT:
            self._load_settings()
            self._busy_until = now + exec_s
        elif code == SET_TEMPERATURE_OFFSET:
            self.offset_word = args[0]
        elif code == SET_SENSOR_ALTITUDE:
            self.altitude = args[0]
        elif code == SET_AMBIENT_PRESSURE:
            self.pressure_word = args[0]
        elif code == GET_TEMPERATURE_OFFSET:
            self._answer([self.offset_word])
        elif code == GET_SENSOR_ALTITUDE:
            self._answer([self.altitude])
        elif code == GET_SERIAL:
            self._answer([(self.serial >> 32) & 0xFFFF, (self.serial >> 16) & 0xFFFF, self.serial & 0xFFFF])
        elif code == GET_DATA_READY:
            self._answer([READY if self._completed(now) > self._delivered else NOT_READY])
        elif code == READ_MEASUREMENT:
            k = self._completed(now)
            if k > self._delivered:
                self._delivered = k
                m = self._measure(self._started + k * self.interval)
                self._answer([m.co2, m.temperature_word, m.humidity_word])

    def _answer(self, words: list[int]) -> None:
        self._pending = [b for w in words for b in word_bytes(w)]

    def _completed(self, now: float) -> int:
        """How many measurements have completed since start (0 when idle)."""
        if not self._periodic:
            return 0
        return int((now - self._started + EPSILON_S) // self.interval)

    def _measure(self, at: float) -> Scd4xChipMeasurement:
        cond = self.room.at(at)
        offset = self.offset_word * 175 / 65535
        temperature = cond.temperature + self.self_heating - offset
        m = Scd4xChipMeasurement(
            finished=at, room=cond,
            co2=_clamp16(round(cond.co2)),
            temperature_word=_clamp16(round((temperature + 45) * 65535 / 175)),
            humidity_word=_clamp16(round(cond.humidity * 65535 / 100)),
        )
        self.measurements.append(m)
        return m


def _clamp16(value: int) -> int:
    return min(0xFFFF, max(0, value))


def emulate(ctx: HalContext, params: dict[str, Any]) -> None:
    """Mock mode: put an SCD4x at the configured address unless something answers there."""
    ctx.emulate_i2c(params["bus"], params["address"],
                    lambda c: EmulatedScd4x(c.room, clock=c.clock, history=NODE_DEVICE_HISTORY))
