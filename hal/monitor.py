"""The board's own health: CPU temperature, CPU load, memory and uptime from sysfs/procfs.

Everything is read through `ctx.sysfs()`, so tests hand in a fake tree and mock mode shows
the emulated cpu-thermal zone next to this machine's real /proc. Each group of quantities
fails on its own: a board without a thermal zone still reports load, memory and uptime.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from hal.availability import FailureLog
from hal.errors import DeviceUnavailable, HalConfigError, ImplausibleValue
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

THERMAL = "/sys/class/thermal"
# Zone types that measure the SoC: Raspberry Pi ("cpu-thermal"), other ARM boards
# ("soc-thermal", "cpu0-thermal"), Intel ("x86_pkg_temp"), AMD/ACPI fallbacks last.
CPU_LIKE = ("cpu", "soc", "x86_pkg_temp", "coretemp", "k10temp")
MEMORY_QUANTITIES = ("memory_used", "memory_total", "memory_percent")


class _NotYet(DeviceUnavailable):
    """Load needs CPU time between two samples, and none has passed yet: no fault to warn of."""


class SystemMonitor:
    """CPU temperature, load (between reads), memory and uptime of the board it runs on."""

    kind = "monitor"
    quantities = ("cpu_temperature", "cpu_load", "memory_used", "memory_total", "memory_percent", "uptime")

    def __init__(self, ctx: HalContext, name: str, thermal_zone: str = "") -> None:
        if not isinstance(thermal_zone, str):
            raise HalConfigError(f"{name}: thermal_zone must be a string, got {thermal_zone!r}")
        self.name = name
        self.thermal_zone = thermal_zone.strip()
        self._ctx = ctx
        self._sysfs = ctx.sysfs()
        self._lock = threading.Lock()
        self._zone: str | None = None
        self._availability = FailureLog(log, name)
        self._closed = False
        # A baseline now, so the first read already has an interval to measure load over.
        self._prev_cpu: tuple[int, int] | None = None
        try:
            self._prev_cpu = self._cpu_times()
        except (OSError, ImplausibleValue) as exc:
            log.debug("%s: no /proc/stat baseline yet: %s", name, exc)

    def __repr__(self) -> str:
        return f"SystemMonitor(name={self.name!r}, zone={self._zone or self.thermal_zone!r})"

    def read(self) -> list[Reading]:
        """One reading per quantity; a group that cannot be read is 'unavailable' with a reason."""
        with self._lock:
            ts = self._ctx.clock()
            if self._closed:
                return [self._failed(q, ts, "sensor closed") for q in self.quantities]
            out: list[Reading] = []
            out += self._group("thermal", ("cpu_temperature",), ts, lambda: (self._cpu_temperature(),))
            out += self._group("load", ("cpu_load",), ts, lambda: (self._cpu_load(),))
            out += self._group("memory", MEMORY_QUANTITIES, ts, self._memory)
            out += self._group("uptime", ("uptime",), ts, lambda: (self._uptime(),))
            return out

    def close(self) -> None:
        """Nothing to release; later reads report 'closed'."""
        with self._lock:
            self._closed = True

    # -- availability, logged once per change ------------------------------------------

    def _group(self, group: str, quantities: tuple[str, ...], ts: float,
               measure: Callable[[], tuple[float, ...]]) -> list[Reading]:
        try:
            values = measure()
        except _NotYet as exc:  # a node's first poll comes within a tick of the monitor's start
            log.debug("%s: %s not measured yet: %s", self.name, group, exc)
            return [self._failed(q, ts, str(exc)) for q in quantities]
        except (OSError, ValueError, DeviceUnavailable) as exc:
            reason = str(exc) or type(exc).__name__
            self._availability.failed(group, reason)
            return [self._failed(q, ts, reason) for q in quantities]
        self._availability.recovered(group)
        return [Reading.measured(self._ctx.node, self.name, q, v, ts) for q, v in zip(quantities, values, strict=True)]

    def _failed(self, quantity: str, ts: float, reason: str) -> Reading:
        return Reading.failed(self._ctx.node, self.name, quantity, ts, reason)

    # -- CPU temperature ---------------------------------------------------------------

    def _cpu_temperature(self) -> float:
        zone = self._zone or self._find_zone()
        try:
            raw = self._sysfs.read_text(f"{zone}/temp")
        except OSError:
            self._zone = None  # the zone may have been re-numbered; look again next time
            raise
        try:
            value = round(int(raw.strip()) / 1000.0, 2)
        except ValueError:
            raise ImplausibleValue(f"{zone}/temp is not an integer: {raw.strip()[:40]!r}") from None
        if not -40.0 <= value <= 150.0:
            raise ImplausibleValue(f"{zone}/temp reads {value:g} °C, outside -40..150")
        return value

    def _find_zone(self) -> str:
        """The configured zone (by type or directory name), else the first cpu-like, else the first."""
        zones: list[tuple[str, str]] = []
        for path in sorted(self._sysfs.glob(f"{THERMAL}/thermal_zone*"), key=_zone_number):
            try:
                zones.append((path, self._sysfs.read_text(f"{path}/type").strip()))
            except OSError as exc:
                log.debug("%s: cannot read %s/type: %s", self.name, path, exc)
        if not zones:
            raise DeviceUnavailable(f"no thermal zone under {THERMAL}")
        if self.thermal_zone:
            for path, ztype in zones:
                if self.thermal_zone in (ztype, path.rsplit("/", 1)[-1]):
                    self._zone = path
                    return path
            listed = ", ".join(f"{p.rsplit('/', 1)[-1]}={t}" for p, t in zones)
            raise DeviceUnavailable(f"thermal zone {self.thermal_zone!r} not found (have {listed})")
        for pattern in CPU_LIKE:
            for path, ztype in zones:
                if pattern in ztype.lower():
                    self._zone = path
                    return path
        self._zone = zones[0][0]
        return self._zone

    # -- CPU load ----------------------------------------------------------------------

    def _cpu_times(self) -> tuple[int, int]:
        """(busy, total) jiffies from the aggregate 'cpu' line of /proc/stat."""
        text = self._sysfs.read_text("/proc/stat")
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                try:
                    # user nice system idle iowait irq softirq steal; guest time is already
                    # counted in user/nice, so adding it would count it twice.
                    ticks = [int(f) for f in fields[1:9]]
                except ValueError:
                    raise ImplausibleValue(f"/proc/stat cpu line is not numeric: {line[:80]!r}") from None
                if len(ticks) < 4:
                    raise ImplausibleValue(f"/proc/stat cpu line is too short: {line[:80]!r}")
                total = sum(ticks)
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                return total - idle, total
        raise ImplausibleValue("/proc/stat has no aggregate 'cpu' line")

    def _cpu_load(self) -> float:
        busy, total = self._cpu_times()
        prev, self._prev_cpu = self._prev_cpu, (busy, total)
        if prev is None:
            raise _NotYet("first /proc/stat sample; load is measured between two reads")
        d_busy, d_total = busy - prev[0], total - prev[1]
        if d_total < 0 or d_busy < 0:
            # Counters went backwards: a different /proc (container restart) or a reboot.
            raise DeviceUnavailable("/proc/stat counters went backwards; measuring again from here")
        if d_total == 0:
            self._prev_cpu = prev  # measure the next read from the same start
            raise _NotYet("no CPU time elapsed since the previous read")
        return round(min(100.0, 100.0 * d_busy / d_total), 2)

    # -- memory and uptime -------------------------------------------------------------

    def _memory(self) -> tuple[float, float, float]:
        """(used MB, total MB, used %), where used = MemTotal - MemAvailable."""
        info: dict[str, int] = {}
        for line in self._sysfs.read_text("/proc/meminfo").splitlines():
            m = re.match(r"(\w+):\s+(\d+)", line)
            if m:
                info[m.group(1)] = int(m.group(2))  # kB
        if "MemTotal" not in info or info["MemTotal"] <= 0:
            raise ImplausibleValue("/proc/meminfo has no MemTotal")
        total = info["MemTotal"]
        available = info.get("MemAvailable")
        if available is None:
            # Kernels before 3.14 lack MemAvailable; free + page cache is the usual estimate.
            available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
        used = max(0, total - available)
        return round(used / 1024.0, 1), round(total / 1024.0, 1), round(100.0 * used / total, 2)

    def _uptime(self) -> float:
        raw = self._sysfs.read_text("/proc/uptime")
        try:
            return float(raw.split()[0])
        except (IndexError, ValueError):
            raise ImplausibleValue(f"/proc/uptime is not a number: {raw.strip()[:40]!r}") from None


def _zone_number(path: str) -> int:
    """thermal_zone10 sorts after thermal_zone9."""
    m = re.search(r"(\d+)$", path)
    return int(m.group(1)) if m else 0
