"""The Sensirion SCD40/SCD41 as a Sensor: CO2, temperature and humidity in periodic measurement.

Commands, conversions and timings from the SCD4x datasheet, execution times as in Sensirion's
embedded-i2c-scd4x driver: each command is 16 bits MSB first, each word read or written
carries a CRC-8; a measurement completes every 5 s after start_periodic_measurement; while
measuring the chip refuses configuration commands, so the first read stops it, configures it
(temperature offset, altitude) and starts it again.

Polling: a read takes a new measurement when the chip has one, waits up to 1 s for one due
that soon, and otherwise repeats the last measurement while it is at most 10 s old (two update
intervals). With no new data for 11 s the chip has lost its state (reset, power loss): the
read restarts it with stop, reinit, configure, start. Every reading is quality "ok": Sensirion
has the first reading discarded only after wake_up (SCD41 single shot), which periodic
measurement never uses.

Retries: hal.i2c.RetryingBus repeats a transfer on NACK or I/O error. Repeating a command is
safe for all of these but start_periodic_measurement: after a lost ACK its repeat is NACKed
by a chip already measuring, so a failed start leaves the state unknown and the next attempt
begins with stop_periodic_measurement, which the chip accepts in either state. Reads follow
their command after its execution time in a transfer of their own; an idempotent query whose
read fails is asked again from its command, read_measurement (which empties the chip's
buffer) is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.crc import sensirion_crc8
from hal.driver import NotYet, SensorDriver, check_int
from hal.errors import BusError, DeviceUnavailable, HalConfigError, HalError, ReadingError
from hal.i2c import i2c_messages
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

START_PERIODIC = 0x21B1
READ_MEASUREMENT = 0xEC05
STOP_PERIODIC = 0x3F86
SET_TEMPERATURE_OFFSET = 0x241D
SET_SENSOR_ALTITUDE = 0x2427
GET_DATA_READY = 0xE4B8
GET_SERIAL = 0x3682
REINIT = 0x3646

EXEC_S = 0.001  # execution time of the set/get commands and read_measurement
STOP_S = 0.5  # the chip answers again 500 ms after stop_periodic_measurement
REINIT_S = 0.030
INTERVAL_S = 5.0  # signal update interval in periodic measurement
WAIT_S = 1.0  # the longest a read waits for a measurement that is due
POLL_S = 0.1
FRESH_S = 2 * INTERVAL_S  # a repeated measurement is at most this old
STALL_S = 2 * INTERVAL_S + 1.0  # no new measurement for this long: the chip is not measuring
PART = "SCD4x"


@dataclass(frozen=True, slots=True)
class Scd4xMeasurement:
    """One measurement as read from the chip, and when it was read (ctx clock)."""

    co2: int  # ppm
    temperature: float  # °C
    humidity: float  # %RH
    at: float


def temperature_offset_word(offset_c: float) -> int:
    """The set_temperature_offset argument: offset * 65535 / 175, rounded (4 °C -> 0x05DA)."""
    return round(offset_c * 65535 / 175)


def decode_measurement(words: list[int]) -> tuple[int, float, float]:
    """(CO2 ppm, °C, %RH) from read_measurement's three words."""
    co2, t, rh = words
    return co2, -45 + 175 * t / 65535, 100 * rh / 65535


def data_ready(word: int) -> bool:
    """get_data_ready_status: ready when any of the 11 least significant bits is set."""
    return word & 0x07FF != 0


def encode_word(word: int) -> list[int]:
    """A 16-bit argument as sent: MSB, LSB, CRC-8."""
    msb, lsb = (word >> 8) & 0xFF, word & 0xFF
    return [msb, lsb, sensirion_crc8((msb, lsb))]


def decode_words(data: list[int], what: str) -> list[int]:
    """The words of a read, each checked against its CRC; BusError naming the first bad one."""
    words = []
    for i in range(0, len(data) - 2, 3):
        msb, lsb, crc = data[i: i + 3]
        expected = sensirion_crc8((msb, lsb))
        if crc != expected:
            raise BusError(f"CRC mismatch in word {i // 3} of {what}: 0x{msb:02x}{lsb:02x} came with "
                           f"CRC 0x{crc:02x}, expected 0x{expected:02x}")
        words.append((msb << 8) | lsb)
    return words


class Scd4xSensor(SensorDriver[Scd4xMeasurement]):
    """An SCD40/SCD41 on an I2C bus of the node, in periodic measurement."""

    kind = "scd4x"
    quantities = ("co2", "temperature", "humidity")

    def __init__(self, ctx: HalContext, name: str, bus: int = 1, address: int = 0x62, altitude: int = 0,
                 temperature_offset: float = 4.0, *, sleep: Callable[[float], None] | None = None) -> None:
        for label, value, low, high in (("bus", bus, 0, 255), ("address", address, 0x03, 0x77),
                                        ("altitude", altitude, 0, 3000)):
            check_int(name, label, value, low, high)
        if isinstance(temperature_offset, bool) or not isinstance(temperature_offset, (int, float)) \
                or not 0 <= temperature_offset <= 20:
            raise HalConfigError(f"{name}: temperature_offset must be 0..20 °C, got {temperature_offset!r}")
        super().__init__(ctx, name, log, PART, "starts", "restarts", "measurements")
        self.bus_number = bus
        self.address = address
        self.altitude = altitude
        self.temperature_offset = float(temperature_offset)
        self._offset_word = temperature_offset_word(temperature_offset)
        # A context that pairs its clock with a sleep (a test's fake time) lends it to the driver.
        self._sleep = sleep or ctx.sleep
        self._msg = i2c_messages()
        self._running = False  # periodic measurement started by us and not known to be lost
        self._since = 0.0  # when the chip last gave new data, or was started
        self._last: Scd4xMeasurement | None = None
        self.serial: int | None = None

    def __repr__(self) -> str:
        serial = "" if self.serial is None else f", serial={self.serial}"
        return f"Scd4xSensor(name={self.name!r}, bus={self.bus_number}, address=0x{self.address:02x}{serial})"

    def _release(self) -> None:
        """Stop periodic measurement (best effort: it saves the chip's power)."""
        if self._running:
            try:
                self._command(STOP_PERIODIC)
            except (HalError, OSError) as exc:
                log.debug("%s: stop on close failed: %s", self.name, exc)
            self._running = False

    # -- measuring ---------------------------------------------------------------------

    def _measure(self) -> Scd4xMeasurement:
        if not self._running:
            self._start()
        now = self._clock()
        due = self._since + INTERVAL_S  # the next measurement completes by then
        if self._data_ready() or (due - WAIT_S <= now < due + WAIT_S and self._wait(min(now, due) + WAIT_S)):
            return self._read_measurement()
        now = self._clock()
        quiet = now - self._since
        if quiet > STALL_S:
            self.stats["restarts"] += 1
            self._running = False
            self._start(recover=True)
            raise DeviceUnavailable(f"no new measurement for {quiet:.0f} s (chip reset or power loss?): "
                           f"periodic measurement restarted")
        last = self._last
        if last is not None and now - last.at <= FRESH_S:
            return last
        if last is None or last.at < self._since:
            raise NotYet(f"periodic measurement started; first result due in "
                         f"{max(0.0, self._since + INTERVAL_S - now):.1f} s")
        raise DeviceUnavailable(f"no new measurement for {quiet:.0f} s")

    def _wait(self, until: float) -> bool:
        """Poll data-ready until it is set or `until` has passed."""
        while (left := until - self._clock()) > 0:
            self._sleep(min(POLL_S, left))
            if self._data_ready():
                return True
        return False

    def _start(self, recover: bool = False) -> None:
        self._command(STOP_PERIODIC)
        self._sleep(STOP_S)
        if recover:
            self._command(REINIT)
            self._sleep(REINIT_S)
        self._command(SET_TEMPERATURE_OFFSET, self._offset_word)
        self._sleep(EXEC_S)
        self._command(SET_SENSOR_ALTITUDE, self.altitude)
        self._sleep(EXEC_S)
        if self.serial is None:
            hi, mid, lo = self._query(GET_SERIAL, 3, "get_serial_number")
            self.serial = (hi << 32) | (mid << 16) | lo
            log.info("%s: SCD4x serial %d at 0x%02x on bus %d", self.name, self.serial, self.address,
                     self.bus_number)
        self._command(START_PERIODIC)
        self._running = True
        self._since = self._clock()
        self.stats["starts"] += 1

    def _data_ready(self) -> bool:
        return data_ready(self._query(GET_DATA_READY, 1, "get_data_ready_status")[0])

    def _read_measurement(self) -> Scd4xMeasurement:
        words = self._query(READ_MEASUREMENT, 3, "read_measurement", attempts=1)
        co2, temperature, humidity = decode_measurement(words)
        m = Scd4xMeasurement(co2, temperature, humidity, self._clock())
        self._last = m
        self._since = m.at
        self.stats["measurements"] += 1
        return m

    # -- transfers ---------------------------------------------------------------------

    def _bus(self) -> Any:
        return self._ctx.i2c_bus(self.bus_number)

    def _command(self, command: int, argument: int | None = None) -> None:
        data = [command >> 8, command & 0xFF]
        if argument is not None:
            data += encode_word(argument)
        self._bus().i2c_rdwr(self._msg.write(self.address, data))

    def _query(self, command: int, n_words: int, what: str, attempts: int = 2) -> list[int]:
        """Send a command, wait its execution time, read n words; again from the command if that fails."""
        for attempt in range(attempts):
            self._command(command)
            self._sleep(EXEC_S)
            msg = self._msg.read(self.address, 3 * n_words)
            try:
                self._bus().i2c_rdwr(msg)
                return decode_words(list(msg), what)
            except OSError:  # BusError (retries spent, CRC mismatch) among them
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- readings ----------------------------------------------------------------------

    def _report(self, m: Scd4xMeasurement) -> list[Reading]:
        """One reading per quantity; a 0 ppm sample fails CO2 alone."""
        self._availability.recovered(PART)
        node, ts = self._ctx.node, self._clock()
        out = []
        for quantity, value in (("co2", float(m.co2)), ("temperature", round(m.temperature, 2)),
                                ("humidity", round(m.humidity, 2))):
            if quantity == "co2" and m.co2 == 0:
                # Sensirion's example code skips such samples as invalid
                out.append(Reading.failed(node, self.name, quantity, ts, "the chip reported 0 ppm "
                                                                          "(an invalid sample)"))
                continue
            try:
                out.append(Reading.measured(node, self.name, quantity, value, ts))
            except ReadingError as exc:
                out.append(Reading.failed(node, self.name, quantity, ts, f"implausible: {exc}"))
        return out
