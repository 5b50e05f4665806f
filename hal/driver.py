"""What every chip driver's Sensor does the same way: read() that never raises, close(), checks.

Why this exists: the BH1750, SHT4x/SHT3x, DS18B20, SCD4x, ADS1115 and BME680 drivers each had
the same read() written out — count the read under the lock, refuse when closed, measure, turn
the errors a device is expected to raise into 'unavailable' readings with the driver's own
explanation, log any other exception and still return readings — and the same `_failed()`,
`close()` and integer checks. Written once here, a driver says only what differs: how it
measures (`_measure`), what the result becomes (`_report`) and how it explains a fault
(`_explain`); the skeleton cannot drift from one driver to the next.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Generic, TypeVar

from hal.availability import FailureLog
from hal.errors import HalConfigError, HalError, ReadingError
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

T = TypeVar("T")


def check_int(name: str, label: str, value: object, low: int, high: int | None = None) -> None:
    """HalConfigError unless `value` is an integer (a bool is not) in low..high (high None: no upper bound)."""
    if (isinstance(value, bool) or not isinstance(value, int)
            or value < low or (high is not None and value > high)):
        bound = f">= {low}" if high is None else f"{low}..{high}"
        raise HalConfigError(f"{name}: {label} must be an integer {bound}, got {value!r}")


class NotYet(Exception):
    """No measurement yet, and that is no fault (a chip just started): unavailable readings,
    debug-logged, not counted as a failure."""


class SensorDriver(Generic[T]):
    """The shared half of a chip driver; T is what `_measure()` returns to `_report()`.

    A subclass sets `kind` and `quantities`, calls `__init__` after checking its parameters,
    and implements `_measure` and `_report`; `_explain` and `_release` when it has more to say
    or to give back. `part` names the device in the availability log ("BH1750 unavailable: ...")
    and in the log line of an unexpected error.
    """

    kind: str
    quantities: tuple[str, ...]

    def __init__(self, ctx: HalContext, name: str, log: logging.Logger, part: str, *counters: str) -> None:
        self.name = name
        self.part = part
        self._ctx = ctx
        self._clock = ctx.clock
        self._log = log
        self._lock = threading.Lock()
        self._availability = FailureLog(log, name)
        self._closed = False
        self.stats = dict.fromkeys(("reads", "failures", *counters), 0)

    def read(self) -> list[Reading]:
        """One reading per quantity; 'unavailable' with the reason for what failed. Never raises."""
        with self._lock:
            self.stats["reads"] += 1
            if self._closed:
                return self._failed("sensor closed")
            try:
                result = self._measure()
            except NotYet as exc:
                self._log.debug("%s: %s", self.name, exc)
                return self._unavailable(str(exc))
            except (HalError, OSError) as exc:
                return self._failed(self._explain(exc))
            except Exception as exc:  # read() never raises; an unknown error still gets logged
                self._log.exception("%s: unexpected error reading the %s", self.name, self.part)
                return self._failed(f"unexpected {type(exc).__name__}: {exc}")
            return self._report(result)

    def close(self) -> None:
        """Release what the driver holds (once); later reads report 'sensor closed'."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    # -- what a driver provides ----------------------------------------------------------

    def _measure(self) -> T:
        """Talk to the device; HalError/OSError for a fault `_explain` can put into words."""
        raise NotImplementedError

    def _report(self, result: T) -> list[Reading]:
        """The readings of a measurement, marking the part recovered (or failed) as they turn out."""
        raise NotImplementedError

    def _explain(self, exc: BaseException) -> str:
        """The reason an expected fault gives its readings."""
        return str(exc) or type(exc).__name__

    def _release(self) -> None:
        """Give back what the driver holds beyond the context's bus or files; nothing by default."""

    # -- readings --------------------------------------------------------------------------

    def _measured(self, quantity: str, value: float) -> list[Reading]:
        """The one reading of a single-quantity driver, the part recovered; failed if the table refuses it."""
        ts = self._clock()
        try:
            reading = Reading.measured(self._ctx.node, self.name, quantity, value, ts)
        except ReadingError as exc:  # e.g. a probe's range beyond the readings table's
            return self._failed(str(exc))
        self._availability.recovered(self.part)
        return [reading]

    def _failed(self, reason: str, part: str | None = None) -> list[Reading]:
        """Count and log a failure of `part` (the device by default); unavailable readings."""
        self.stats["failures"] += 1
        self._availability.failed(part or self.part, reason)
        return self._unavailable(reason)

    def _unavailable(self, reason: str) -> list[Reading]:
        ts = self._clock()
        try:
            return [Reading.failed(self._ctx.node, self.name, q, ts, reason) for q in self.quantities]
        except ReadingError:  # e.g. an empty node name: still never raise from read()
            self._log.exception("%s: cannot even build 'unavailable' readings", self.name)
            return []
