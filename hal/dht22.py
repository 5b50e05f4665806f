"""DHT22 temperature/humidity through the kernel dht11 IIO driver (`dtoverlay=dht11,gpiopin=N`).

The driver bit-bangs the one-wire protocol from interrupt timestamps, so on a busy Pi a
fair share of measurements fail: EIO on a checksum error, ETIMEDOUT when too few edges
arrived. A good measurement is cached by the driver for 2 s; a failed one is not, and the
chip wants about 2 s between start signals, so every device access here is at least
`min_interval` seconds after the previous one (the wait goes through an injected `sleep`).

Smoothing choice: a median of 3 fresh samples per read would cost ~4 s of waiting every
time. Instead each read takes one good sample (retrying transient errors) and reports the
median of the last 3 accepted samples across reads, dropping samples older than
`max_sample_age` s. That rejects a single corrupt frame the 8-bit checksum let through, at
the cost of one read of lag on a genuine step. A read sooner than `min_interval` after a
good sample reports the current median without touching the device, since the kernel
would only repeat its cached value (and a repeated sample would bias the median).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from hal.availability import FailureLog
from hal.errors import DeviceUnavailable, HalConfigError, ImplausibleValue
from hal.readings import Reading, median

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

IIO_DEVICES = "/sys/bus/iio/devices"
TEMP_FILE = "in_temp_input"  # milli-°C
HUMIDITY_FILE = "in_humidityrelative_input"  # milli-%RH
TEMP_RANGE = (-40.0, 80.0)  # DHT22 datasheet operating range
HUMIDITY_RANGE = (0.0, 100.0)
TRANSIENT = frozenset({errno.EIO, errno.ETIMEDOUT})  # the driver's "try again" errors
GONE = frozenset({errno.ENOENT, errno.ENODEV})  # the device was unbound or re-indexed
WINDOW = 3


class Dht22Sensor:
    """A DHT22 found by its IIO `name` file; readings are the median of the last 3 good samples."""

    kind = "dht22"
    quantities = ("temperature", "humidity")

    def __init__(self, ctx: HalContext, name: str, device_name: str = "dht11",
                 min_interval: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 attempts: int = 3, max_sample_age: float = 600.0) -> None:
        if not isinstance(device_name, str) or not device_name.strip():
            raise HalConfigError(f"{name}: device_name must be a non-empty string, got {device_name!r}")
        if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)) or min_interval < 0:
            raise HalConfigError(f"{name}: min_interval must be a number >= 0, got {min_interval!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise HalConfigError(f"{name}: attempts must be an integer >= 1, got {attempts!r}")
        if max_sample_age <= 0:
            raise HalConfigError(f"{name}: max_sample_age must be > 0, got {max_sample_age!r}")
        self.name = name
        self.device_name = device_name.strip()
        self.min_interval = float(min_interval)
        self.attempts = attempts
        self.max_sample_age = float(max_sample_age)
        self._ctx = ctx
        self._sysfs = ctx.sysfs()
        self._clock = ctx.clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._device: str | None = None
        self._last_attempt: float | None = None
        self._last_attempt_ok = False
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)
        self._availability = FailureLog(log, name)
        self._closed = False

    def __repr__(self) -> str:
        return f"Dht22Sensor(name={self.name!r}, device={self._device or self.device_name!r})"

    @property
    def device_path(self) -> str | None:
        """The IIO directory in use, e.g. /sys/bus/iio/devices/iio:device0 (None until found)."""
        return self._device

    def read(self) -> list[Reading]:
        """One reading per quantity; 'unavailable' with the reason when no good sample came."""
        with self._lock:
            if self._closed:
                return self._failed("sensor closed")
            try:
                temperature, humidity = self._sample()
            except (DeviceUnavailable, ImplausibleValue) as exc:
                return self._failed(str(exc))
            except Exception as exc:  # read() never raises; an unknown error still gets logged
                log.exception("%s: unexpected error reading the DHT22", self.name)
                return self._failed(f"unexpected {type(exc).__name__}: {exc}")
            self._availability.recovered("DHT22")
            ts = self._clock()
            node = self._ctx.node
            return [
                Reading.measured(node, self.name, "temperature", round(temperature, 2), ts),
                Reading.measured(node, self.name, "humidity", round(humidity, 2), ts),
            ]

    def close(self) -> None:
        """Nothing to release (sysfs files are opened per read); later reads report 'closed'."""
        with self._lock:
            self._closed = True

    # -- internals -------------------------------------------------------------------

    def _failed(self, reason: str) -> list[Reading]:
        self._availability.failed("DHT22", reason)
        ts = self._clock()
        return [Reading.failed(self._ctx.node, self.name, q, ts, reason) for q in self.quantities]

    def _sample(self) -> tuple[float, float]:
        """Take one good sample (with retries) and return the medians over the window."""
        now = self._clock()
        if (self._last_attempt_ok and self._samples and self._last_attempt is not None
                and 0.0 <= now - self._last_attempt < self.min_interval):
            return self._median(now)
        device = self._find_device()
        last_error = "no attempt made"
        for _ in range(self.attempts):
            self._wait_turn()
            self._last_attempt = self._clock()
            self._last_attempt_ok = False
            try:
                raw_t = self._sysfs.read_text(f"{device}/{TEMP_FILE}")
                raw_h = self._sysfs.read_text(f"{device}/{HUMIDITY_FILE}")
            except OSError as exc:
                if exc.errno in TRANSIENT:
                    last_error = f"{errno.errorcode.get(exc.errno, exc.errno)} from the dht11 driver"
                    log.debug("%s: %s, retrying", self.name, last_error)
                    continue
                if exc.errno in GONE:
                    log.info("%s: %s vanished (%s); looking for it again", self.name, device, exc)
                    self._device = None
                    device = self._find_device()
                    last_error = f"device moved to {device}"
                    continue
                raise DeviceUnavailable(f"reading {device}: {exc}") from exc
            try:
                temperature = _parse_milli(raw_t, TEMP_FILE, TEMP_RANGE)
                humidity = _parse_milli(raw_h, HUMIDITY_FILE, HUMIDITY_RANGE)
            except ImplausibleValue as exc:
                last_error = str(exc)
                log.debug("%s: rejected sample: %s", self.name, exc)
                continue
            self._last_attempt_ok = True
            self._samples.append((self._last_attempt, temperature, humidity))
            return self._median(self._last_attempt)
        raise DeviceUnavailable(
            f"no good sample in {self.attempts} attempts {self.min_interval:g} s apart; last: {last_error}"
        )

    def _wait_turn(self) -> None:
        """Sleep until min_interval has passed since the previous device access."""
        if self._last_attempt is None or self.min_interval <= 0:
            return
        # A clock stepped backwards makes `elapsed` negative: wait the full interval, no more.
        elapsed = max(0.0, self._clock() - self._last_attempt)
        wait = self.min_interval - elapsed
        if wait > 0:
            self._sleep(wait)

    def _median(self, now: float) -> tuple[float, float]:
        while self._samples and now - self._samples[0][0] > self.max_sample_age:
            self._samples.popleft()
        temps = [s[1] for s in self._samples]
        hums = [s[2] for s in self._samples]
        return median(temps), median(hums)

    def _find_device(self) -> str:
        """The IIO directory whose `name` is device_name; re-checked each read as N may change."""
        if self._device is not None:
            try:
                if self._sysfs.read_text(f"{self._device}/name").strip() == self.device_name:
                    return self._device
                log.info("%s: %s is no longer %r", self.name, self._device, self.device_name)
            except OSError as exc:
                log.info("%s: %s is gone (%s)", self.name, self._device, exc)
            self._device = None
        for path in self._sysfs.glob(f"{IIO_DEVICES}/iio:device*"):
            try:
                found = self._sysfs.read_text(f"{path}/name").strip()
            except OSError as exc:
                log.debug("%s: cannot read %s/name: %s", self.name, path, exc)
                continue
            if found == self.device_name:
                log.info("%s: using %s", self.name, path)
                self._device = path
                return path
        raise DeviceUnavailable(
            f"no IIO device named {self.device_name!r} under {IIO_DEVICES} "
            "(is dtoverlay=dht11,gpiopin=N loaded?)"
        )


def _parse_milli(raw: str, what: str, bounds: tuple[float, float]) -> float:
    """A milli-unit integer from the driver, scaled and checked against the DHT22's range."""
    try:
        value = int(raw.strip()) / 1000.0
    except ValueError:
        raise ImplausibleValue(f"{what} is not an integer: {raw.strip()[:40]!r}") from None
    low, high = bounds
    if not low <= value <= high:
        raise ImplausibleValue(f"{what} {value:g} is outside the DHT22 range {low:g}..{high:g}")
    return value
