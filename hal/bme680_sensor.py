"""The BME680/BME688 as a Sensor: temperature, humidity, pressure, gas resistance and IAQ.

Around each trigger-wait-read sequence the sensor holds, when configured, an fcntl lock
(other processes on this board) and a GPIO claim line (the other board on the shared bus:
wait while its line is high, drive ours high while measuring). The driver below it checks
the chip's registers around every measurement, so the claim line lowers the collision
rate but correctness does not depend on it.

Plausibility: a median of 3 would cost three heater cycles (~0.5 s and a disturbed gas
layer) per read, so instead each value is compared with the previous accepted one; a jump
beyond `step + rate * dt` is re-measured once and accepted only if the second measurement
is plausible or confirms the first (a genuine step, e.g. a window opened).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hal.bme680 import Bme680, Bme680Measurement
from hal.driver import SensorDriver, check_int
from hal.errors import DeviceUnavailable, HalConfigError, HalError, ImplausibleValue
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

# quantity -> (allowed step, allowed rate per second) between accepted measurements
JUMP_LIMITS = {"temperature": (5.0, 0.05), "humidity": (15.0, 0.25), "pressure": (5.0, 0.02)}
MAX_REFERENCE_AGE_S = 900.0  # an older previous value says nothing about the next one
CONFIRM_FRACTION = 0.1  # two measurements "agree" within this share of the step limit
POLL_S = 0.01


class Bme680Sensor(SensorDriver[list[Reading]]):
    """A BME680/BME688 on an I2C bus of the node, with IAQ from hal.iaq."""

    kind = "bme680"
    quantities = ("temperature", "humidity", "pressure", "gas_resistance", "iaq")

    def __init__(self, ctx: HalContext, name: str, bus: int = 1, address: int = 0x77,
                 heater_temp: int = 320, heater_ms: int = 150, lock_file: str = "",
                 claim_gpio: int = -1, *, sleep: Callable[[float], None] = time.sleep,
                 lock_timeout: float = 5.0, claim_timeout: float = 2.0) -> None:
        check_int(name, "bus", bus, 0)
        if isinstance(claim_gpio, bool) or not isinstance(claim_gpio, int) or claim_gpio < -1:
            raise HalConfigError(f"{name}: claim_gpio must be a GPIO number or -1, got {claim_gpio!r}")
        if not isinstance(lock_file, str):
            raise HalConfigError(f"{name}: lock_file must be a string, got {lock_file!r}")
        super().__init__(ctx, name, log, "BME680", "jumps_rejected", "jumps_confirmed")
        self.bus_number = bus
        self._sleep = sleep
        self._driver_args: dict[str, Any] = {"address": address, "heater_temp": heater_temp,
                                             "heater_ms": heater_ms}
        # A driver without a bus checks the parameters now (HalConfigError); the real one is
        # made at the first read, so a missing chip or bus never stops construction.
        Bme680(None, sleep=sleep, **self._driver_args)
        self._driver: Bme680 | None = None
        self._lock_path = None if not lock_file else (
            Path(lock_file) if os.path.isabs(lock_file) else Path(ctx.state_dir) / lock_file)
        self._lock_timeout = lock_timeout
        self._lock_fh: IO[str] | None = None
        self._claim_gpio = claim_gpio
        self._claim_timeout = claim_timeout
        self._claim: _ClaimLine | None = None
        self._iaq: Any = None
        self._previous: tuple[Bme680Measurement, float] | None = None

    def __repr__(self) -> str:
        return f"Bme680Sensor(name={self.name!r}, bus={self.bus_number}, address=0x{self._driver_args['address']:02x})"

    # -- SensorDriver -------------------------------------------------------------------

    def _measure(self) -> list[Reading]:
        """The readings of a plausible measurement (a reading the table refuses fails them all)."""
        return self._readings(self._plausible_measurement(), self._clock())

    def _report(self, readings: list[Reading]) -> list[Reading]:
        self._availability.recovered("BME680")
        return readings

    def _release(self) -> None:
        """The claim line and the lock file; the IAQ state is saved."""
        if self._claim is not None:
            self._claim.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
        if self._iaq is not None:
            self._iaq.save()

    # -- measuring ---------------------------------------------------------------------

    def _plausible_measurement(self) -> Bme680Measurement:
        first = self._measure_once()
        jump = self._jump(first)
        if jump is None:
            return self._accept(first)
        self.stats["jumps_rejected"] += 1
        log.info("%s: %s; measuring again", self.name, jump)
        second = self._measure_once()
        if self._jump(second) is None:
            return self._accept(second)
        if _agree(first, second):
            self.stats["jumps_confirmed"] += 1
            return self._accept(second)
        raise ImplausibleValue(f"{jump}, and a second measurement did not confirm it")

    def _measure_once(self) -> Bme680Measurement:
        driver = self._device()
        with self._file_lock():
            claim = self._claim_line()
            if claim is not None:
                claim.acquire()
            try:
                return driver.measure()
            finally:
                if claim is not None:
                    claim.release()

    def _accept(self, m: Bme680Measurement) -> Bme680Measurement:
        self._previous = (m, self._clock())
        return m

    def _jump(self, m: Bme680Measurement) -> str | None:
        if self._previous is None:
            return None
        prev, ts = self._previous
        dt = self._clock() - ts
        if not 0 <= dt <= MAX_REFERENCE_AGE_S:
            return None
        for quantity, (step, rate) in JUMP_LIMITS.items():
            old, new = getattr(prev, quantity), getattr(m, quantity)
            if abs(new - old) > step + rate * dt:
                return f"{quantity} jumped from {old:g} to {new:g} in {dt:.1f} s"
        return None

    def _device(self) -> Bme680:
        if self._driver is None:
            bus = self._ctx.i2c_bus(self.bus_number)
            self._driver = Bme680(bus, sleep=self._sleep, **self._driver_args)
        return self._driver

    # -- readings ----------------------------------------------------------------------

    def _readings(self, m: Bme680Measurement, ts: float) -> list[Reading]:
        node = self._ctx.node
        out = [Reading.measured(node, self.name, q, round(getattr(m, q), nd), ts)
               for q, nd in (("temperature", 2), ("humidity", 3), ("pressure", 2))]
        if m.gas_valid and m.heat_stable:
            out.append(Reading.measured(node, self.name, "gas_resistance", round(m.gas_resistance), ts))
            out.append(self._iaq_reading(m, ts))
        else:
            why = "gas measurement invalid" if not m.gas_valid else "gas heater did not reach its temperature"
            out.append(Reading.failed(node, self.name, "gas_resistance", ts, why))
            out.append(Reading.failed(node, self.name, "iaq", ts, f"no gas resistance: {why}"))
        return out

    def _iaq_reading(self, m: Bme680Measurement, ts: float) -> Reading:
        node = self._ctx.node
        try:
            if self._iaq is None:
                from hal.iaq import IaqEstimator  # lazily: only nodes with a BME680 need it

                self._iaq = IaqEstimator(Path(self._ctx.state_dir) / f"iaq-{self.name}.json", clock=self._clock)
            result = self._iaq.update(m.gas_resistance, m.humidity)
            quality = "calibrating" if result.quality == "calibrating" else "ok"
            reading = Reading.measured(node, self.name, "iaq", result.score, ts, quality=quality)
        except (ImportError, HalError, OSError, ValueError) as exc:
            reason = f"IAQ estimate failed: {type(exc).__name__}: {exc}"
            self._availability.failed("IAQ", reason)
            return Reading.failed(node, self.name, "iaq", ts, reason)
        self._availability.recovered("IAQ")
        return reading

    # -- coordination: file lock and GPIO claim line -----------------------------------

    def _file_lock(self) -> _FileLock:
        if self._lock_path is not None and self._lock_fh is None:
            try:
                self._lock_path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fh = open(self._lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open
            except OSError as exc:
                raise DeviceUnavailable(f"cannot open lock file {self._lock_path}: {exc}") from exc
        return _FileLock(self._lock_fh, self._lock_path, self._lock_timeout, self._sleep)

    def _claim_line(self) -> _ClaimLine | None:
        if self._claim_gpio < 0:
            return None
        if self._claim is None:
            try:
                self._claim = _ClaimLine(self._ctx.pin_factory(), self._claim_gpio, self._sleep,
                                         self._claim_timeout, self.name)
            except Exception as exc:  # gpiozero raises its own PinError family
                raise DeviceUnavailable(f"cannot use GPIO{self._claim_gpio} as claim line: {exc}") from exc
        return self._claim


def _agree(a: Bme680Measurement, b: Bme680Measurement) -> bool:
    """Two back-to-back measurements that see the same step confirm it."""
    return all(abs(getattr(a, q) - getattr(b, q)) <= step * CONFIRM_FRACTION
               for q, (step, _) in JUMP_LIMITS.items())


class _FileLock:
    """flock(LOCK_EX) on an open file for a with-block, polling so the wait is bounded."""

    def __init__(self, fh: IO[str] | None, path: Path | None, timeout: float,
                 sleep: Callable[[float], None]) -> None:
        self._fh, self._path, self._timeout, self._sleep = fh, path, timeout, sleep

    def __enter__(self) -> None:
        if self._fh is None:
            return
        waited = 0.0
        while True:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if waited >= self._timeout:
                    raise DeviceUnavailable(f"lock {self._path} held by another process for "
                                            f"{waited:.1f} s") from None
                self._sleep(POLL_S)
                waited += POLL_S

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)


class _ClaimLine:
    """A wire shared with the other board: high while someone measures, pulled low otherwise.

    Idle, our pin is an input with pull-down; to claim we wait while the wire is high (the
    other board measures), then drive it high; to release we go back to input.
    """

    def __init__(self, factory: Any, gpio: int, sleep: Callable[[float], None], timeout: float,
                 owner: str) -> None:
        self._pin = factory.pin(gpio)
        self._sleep = sleep
        self._timeout = timeout
        self._owner = owner
        self.waits = 0
        self.timeouts = 0
        self._idle()

    def _idle(self) -> None:
        # Never drive the wire low: the other board may be driving it high at that moment.
        self._pin.input_with_pull("down")

    def acquire(self) -> None:
        """Wait (bounded) for the other board to release the wire, then drive it high."""
        waited = 0.0
        if self._pin.state:
            self.waits += 1
        while self._pin.state:
            if waited >= self._timeout:
                # A board that died holding the line must not stop us for ever; the driver's
                # register checks still catch a collision.
                self.timeouts += 1
                log.warning("%s: claim line held for %.1f s; measuring anyway", self._owner, waited)
                break
            self._sleep(POLL_S)
            waited += POLL_S
        self._pin.output_with_state(1)  # no low glitch on the way to output

    def release(self) -> None:
        """Stop driving the wire; the pull-downs take it low."""
        self._idle()

    def close(self) -> None:
        """Give the pin back to the factory."""
        self._pin.close()
