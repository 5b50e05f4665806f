"""SystemMonitor on fake /proc and thermal trees, including boards without a thermal zone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hal.errors import HalConfigError
from hal.monitor import SystemMonitor
from hal.readings import Reading
from hal.sensor import SENSOR_KINDS
from hal.sysfs import SysfsRoot

T0 = 1_700_000_000.0
MEMINFO = "MemTotal:        1024000 kB\nMemFree:          100000 kB\nMemAvailable:     256000 kB\n" \
          "Buffers:           10000 kB\nCached:           140000 kB\n"


class Ctx:
    """The three things a sensor takes from HalContext."""

    def __init__(self, sysfs: object, node: str = "pi4") -> None:
        self._sysfs = sysfs
        self.node = node
        self.clock = lambda: T0

    def sysfs(self) -> object:
        return self._sysfs


def write(base: Path, rel: str, text: str) -> None:
    p = base / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def stat_line(user: int, system: int, idle: int, iowait: int = 0, guest: int = 0) -> str:
    return (f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 {guest} 0\n"
            f"cpu0 {user} 0 {system} {idle} {iowait} 0 0 0 {guest} 0\nintr 0\nctxt 0\n")


def add_zone(base: Path, n: int, ztype: str, milli: str) -> None:
    write(base, f"/sys/class/thermal/thermal_zone{n}/type", ztype + "\n")
    write(base, f"/sys/class/thermal/thermal_zone{n}/temp", milli + "\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(tmp_path, "/proc/stat", stat_line(100, 50, 1000))
    write(tmp_path, "/proc/meminfo", MEMINFO)
    write(tmp_path, "/proc/uptime", "31530.17 62879.18\n")
    return tmp_path


def monitor(base: Path, **kw: str) -> SystemMonitor:
    return SystemMonitor(ctx=Ctx(SysfsRoot(base)), name="monitor", **kw)  # type: ignore[arg-type]


def by_quantity(readings: list[Reading]) -> dict[str, Reading]:
    return {r.quantity: r for r in readings}


def test_monitor_reads_every_quantity(tree: Path) -> None:
    add_zone(tree, 0, "cpu-thermal", "48312")
    m = monitor(tree)
    write(tree, "/proc/stat", stat_line(100 + 20, 50 + 10, 1000 + 70))
    r = by_quantity(m.read())
    assert list(r) == list(SystemMonitor.quantities)
    assert r["cpu_temperature"].value == 48.31
    assert r["cpu_load"].value == 30.0
    assert (r["memory_used"].value, r["memory_total"].value, r["memory_percent"].value) == (750.0, 1000.0, 75.0)
    assert r["uptime"].value == 31530.17
    assert all(x.ok and x.node == "pi4" and x.sensor == "monitor" for x in r.values())
    assert r["memory_used"].unit == "MB" and r["uptime"].unit == "s"


def test_monitor_load_counts_iowait_as_idle_and_ignores_guest(tree: Path) -> None:
    m = monitor(tree)
    # 40 busy of 100 ticks; 20 of the 60 idle ticks are iowait; guest 500 is inside user already.
    write(tree, "/proc/stat", stat_line(100 + 40, 50, 1000 + 40, iowait=20, guest=500))
    assert by_quantity(m.read())["cpu_load"].value == 40.0


def test_monitor_load_is_measured_between_reads(tree: Path) -> None:
    m = monitor(tree)
    write(tree, "/proc/stat", stat_line(200, 50, 1000))  # 100 % busy
    assert by_quantity(m.read())["cpu_load"].value == 100.0
    write(tree, "/proc/stat", stat_line(200, 50, 1100))  # then idle
    assert by_quantity(m.read())["cpu_load"].value == 0.0


def test_monitor_load_without_a_baseline_waits_for_a_second_sample(tmp_path: Path) -> None:
    m = monitor(tmp_path)  # no /proc/stat when it was built
    write(tmp_path, "/proc/stat", stat_line(100, 50, 1000))
    first = by_quantity(m.read())["cpu_load"]
    assert first.quality == "unavailable" and "first" in first.reason
    write(tmp_path, "/proc/stat", stat_line(150, 50, 1050))
    assert by_quantity(m.read())["cpu_load"].value == 50.0


def test_monitor_load_not_measured_yet_is_no_warning_and_keeps_its_start(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    add_zone(tree, 0, "x86_pkg_temp", "55000")
    m = monitor(tree)  # its baseline: 150 busy of 1,150 ticks
    with caplog.at_level(logging.INFO, logger="hal.monitor"):
        assert "no CPU time" in by_quantity(m.read())["cpu_load"].reason  # the agent's first poll, at once
    assert not caplog.records  # a node starting is not a device failing
    write(tree, "/proc/stat", stat_line(100 + 30, 50, 1000 + 70))
    assert by_quantity(m.read())["cpu_load"].value == 30.0  # measured from the baseline it kept


def test_monitor_load_with_no_elapsed_time_or_backwards_counters(tree: Path) -> None:
    m = monitor(tree)
    r = by_quantity(m.read())["cpu_load"]
    assert r.quality == "unavailable" and "no CPU time" in r.reason
    write(tree, "/proc/stat", stat_line(10, 5, 100))
    r = by_quantity(m.read())["cpu_load"]
    assert r.quality == "unavailable" and "backwards" in r.reason
    write(tree, "/proc/stat", stat_line(20, 5, 190))
    assert by_quantity(m.read())["cpu_load"].value == 10.0


def test_monitor_without_thermal_zone_still_reports_the_rest(tree: Path) -> None:
    r = by_quantity(monitor(tree).read())
    assert r["cpu_temperature"].quality == "unavailable"
    assert "no thermal zone" in r["cpu_temperature"].reason
    assert r["memory_total"].ok and r["uptime"].ok


def test_monitor_prefers_a_cpu_like_zone(tree: Path) -> None:
    add_zone(tree, 0, "acpitz", "27800")
    add_zone(tree, 1, "x86_pkg_temp", "55000")
    assert by_quantity(monitor(tree).read())["cpu_temperature"].value == 55.0


def test_monitor_falls_back_to_the_lowest_numbered_zone(tree: Path) -> None:
    add_zone(tree, 10, "battery", "30000")
    add_zone(tree, 9, "acpitz", "27800")
    assert by_quantity(monitor(tree).read())["cpu_temperature"].value == 27.8


@pytest.mark.parametrize("zone", ["gpu-thermal", "thermal_zone1"])
def test_monitor_uses_the_named_zone(tree: Path, zone: str) -> None:
    add_zone(tree, 0, "cpu-thermal", "48000")
    add_zone(tree, 1, "gpu-thermal", "61500")
    assert by_quantity(monitor(tree, thermal_zone=zone).read())["cpu_temperature"].value == 61.5


def test_monitor_named_zone_missing_says_which_exist(tree: Path) -> None:
    add_zone(tree, 0, "cpu-thermal", "48000")
    r = by_quantity(monitor(tree, thermal_zone="ddr-thermal").read())["cpu_temperature"]
    assert r.quality == "unavailable"
    assert "'ddr-thermal' not found" in r.reason and "thermal_zone0=cpu-thermal" in r.reason


@pytest.mark.parametrize("raw", ["garbage", "200000", ""])
def test_monitor_rejects_implausible_temperatures(tree: Path, raw: str) -> None:
    add_zone(tree, 0, "cpu-thermal", raw)
    r = by_quantity(monitor(tree).read())["cpu_temperature"]
    assert r.quality == "unavailable" and "temp" in r.reason


def test_monitor_finds_a_zone_that_was_renumbered(tree: Path) -> None:
    add_zone(tree, 0, "cpu-thermal", "48000")
    m = monitor(tree)
    assert by_quantity(m.read())["cpu_temperature"].value == 48.0
    (tree / "sys/class/thermal/thermal_zone0").rename(tree / "sys/class/thermal/thermal_zone3")
    assert by_quantity(m.read())["cpu_temperature"].quality == "unavailable"
    assert by_quantity(m.read())["cpu_temperature"].value == 48.0


def test_monitor_memory_without_memavailable_estimates_it(tree: Path) -> None:
    write(tree, "/proc/meminfo", "MemTotal: 1024000 kB\nMemFree: 100000 kB\nBuffers: 10000 kB\n"
                                 "Cached: 146000 kB\n")
    r = by_quantity(monitor(tree).read())
    assert r["memory_used"].value == 750.0 and r["memory_percent"].value == 75.0


def test_monitor_memory_and_uptime_failures_are_per_group(tree: Path) -> None:
    write(tree, "/proc/meminfo", "nonsense\n")
    (tree / "proc/uptime").unlink()
    r = by_quantity(monitor(tree).read())
    assert all(r[q].quality == "unavailable" for q in ("memory_used", "memory_total", "memory_percent"))
    assert "MemTotal" in r["memory_total"].reason
    assert r["uptime"].quality == "unavailable" and "uptime" in r["uptime"].reason
    assert r["cpu_load"].reason != r["uptime"].reason


def test_monitor_logs_a_failure_once_and_recovery_once(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = monitor(tree)
    with caplog.at_level(logging.INFO, logger="hal.monitor"):
        for _ in range(3):
            m.read()
        add_zone(tree, 0, "cpu-thermal", "48000")
        m.read()
        m.read()
    thermal = [r.getMessage() for r in caplog.records if "thermal" in r.getMessage()]
    assert len(thermal) == 2
    assert "unavailable" in thermal[0] and "recovered" in thermal[1]


def test_monitor_on_this_machine() -> None:
    m = SystemMonitor(ctx=Ctx(SysfsRoot("/")), name="monitor")  # type: ignore[arg-type]
    r = by_quantity(m.read())
    assert r["memory_total"].value > 0 and r["uptime"].value > 0
    # This machine may have no thermal zone: either way it is a reading, not a crash.
    assert r["cpu_temperature"].ok or r["cpu_temperature"].reason


def test_monitor_close_and_bad_parameters(tree: Path) -> None:
    m = monitor(tree)
    m.close()
    assert all(r.reason == "sensor closed" for r in m.read())
    with pytest.raises(HalConfigError):
        SystemMonitor(ctx=Ctx(SysfsRoot(tree)), name="m", thermal_zone=3)  # type: ignore[arg-type]


def test_monitor_builds_from_the_sensor_table(tree: Path) -> None:
    add_zone(tree, 0, "cpu-thermal", "48000")
    m = SENSOR_KINDS["monitor"].build(Ctx(SysfsRoot(tree)), "board", {})  # type: ignore[arg-type]
    assert isinstance(m, SystemMonitor) and m.kind == "monitor"
    assert {r.quantity for r in m.read()} == set(SENSOR_KINDS["monitor"].quantities)
