"""EmulatedSysfs: the dht11 IIO driver and cpu-thermal computed from the room, the rest real."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hal.context import HalContext
from hal.emulated import HISTORY
from hal.emulated.environment import RoomSimulator
from hal.emulated.sysfs import EmulatedSysfs
from tests.clocks import ManualClock

DEV = "/sys/bus/iio/devices/iio:device0"
T0 = 1_700_000_000.0


@pytest.fixture
def room() -> RoomSimulator:
    r = RoomSimulator(seed=3)
    r.pin(temperature=21.34, humidity=48.76, cpu_temperature=51.2345)
    return r


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_emulated_sysfs_lists_one_dht11_device(room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    assert fs.listdir("/sys/bus/iio/devices") == ["iio:device0"]
    assert fs.read_text(f"{DEV}/name") == "dht11\n"
    assert fs.glob("/sys/bus/iio/devices/iio:device*") == [DEV]
    assert fs.listdir(DEV) == ["in_humidityrelative_input", "in_temp_input", "name"]


def test_emulated_sysfs_dht_values_in_milli_units_with_dht22_resolution(
        room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    # The driver scales the DHT22's 0.1-unit steps by 100: 21.34 °C -> 21300.
    assert fs.read_text(f"{DEV}/in_temp_input") == "21300\n"
    assert fs.read_text(f"{DEV}/in_humidityrelative_input") == "48800\n"


def test_emulated_sysfs_dht_caches_a_good_reading_for_two_seconds(
        room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    assert fs.read_text(f"{DEV}/in_temp_input") == "21300\n"
    room.pin(temperature=25.0)
    clock.t += 2.0
    assert fs.read_text(f"{DEV}/in_temp_input") == "21300\n"  # still the cached frame
    clock.t += 0.01
    assert fs.read_text(f"{DEV}/in_temp_input") == "25000\n"
    assert [m.outcome for m in fs.history] == ["ok", "ok"]


def test_emulated_sysfs_dht_faults_are_eio_or_etimedout_and_not_cached(
        room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock, fault_rate=1.0, seed=7)
    codes = set()
    for _ in range(40):
        with pytest.raises(OSError) as info:
            fs.read_text(f"{DEV}/in_temp_input")
        codes.add(info.value.errno)
    assert codes == {errno.EIO, errno.ETIMEDOUT}
    # Every failed read started a new measurement: the driver does not cache failures.
    assert len(fs.history) == 40
    fs.fault_rate = 0.0
    assert fs.read_text(f"{DEV}/in_temp_input") == "21300\n"


def test_emulated_sysfs_keeps_only_recent_measurements(room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    for _ in range(HISTORY + 20):
        clock.t += 2.5
        fs.read_text(f"{DEV}/in_temp_input")
    assert len(fs.history) == HISTORY and fs.history[-1].t == clock.t


def test_emulated_sysfs_fault_rate_is_roughly_honoured(room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock, fault_rate=0.3, seed=11)
    failed = 0
    for _ in range(1000):  # 2.5 s apart: every read is a new measurement
        clock.t += 2.5
        try:
            fs.read_text(f"{DEV}/in_humidityrelative_input")
        except OSError as exc:
            assert exc.errno in (errno.EIO, errno.ETIMEDOUT)
            failed += 1
    assert 240 <= failed <= 360


def test_emulated_sysfs_rejects_a_bad_fault_rate(room: RoomSimulator) -> None:
    with pytest.raises(ValueError):
        EmulatedSysfs(room, fault_rate=1.5)


def test_emulated_sysfs_thermal_zone_reads_room_cpu_temperature(room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    assert fs.glob("/sys/class/thermal/thermal_zone*") == ["/sys/class/thermal/thermal_zone0"]
    assert fs.read_text("/sys/class/thermal/thermal_zone0/type") == "cpu-thermal\n"
    assert fs.read_text("/sys/class/thermal/thermal_zone0/temp") == "51234\n"


def test_emulated_sysfs_unpinned_room_moves_with_the_clock(clock: ManualClock) -> None:
    fs = EmulatedSysfs(RoomSimulator(seed=1), clock=clock)
    first = fs.read_text("/sys/class/thermal/thermal_zone0/temp")
    clock.t += 60.0
    assert fs.read_text("/sys/class/thermal/thermal_zone0/temp") != first


def test_emulated_sysfs_falls_through_to_the_real_proc(room: RoomSimulator) -> None:
    fs = EmulatedSysfs(room)
    assert float(fs.read_text("/proc/uptime").split()[0]) > 0
    assert fs.read_text("/proc/meminfo").startswith("MemTotal:")
    assert fs.read_text("/proc/stat").startswith("cpu ")
    assert fs.exists("/proc/loadavg")


def test_emulated_sysfs_overlay_tree_merges_ancestors_and_hides_virtual_dirs(
        tmp_path: Path, room: RoomSimulator, clock: ManualClock) -> None:
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/hostname").write_text("pi4\n")
    real_zone = tmp_path / "sys/class/thermal/thermal_zone5"
    real_zone.mkdir(parents=True)
    (real_zone / "temp").write_text("99000\n")
    fs = EmulatedSysfs(room, clock=clock, overlay_base=tmp_path)
    assert fs.read_text("/sys/kernel/hostname") == "pi4\n"
    assert fs.listdir("/sys") == ["bus", "class", "kernel"]
    assert fs.is_dir("/sys/bus") and fs.exists("/sys/bus/iio")
    # The emulated thermal directory replaces this machine's: only the cpu-thermal zone.
    assert fs.listdir("/sys/class/thermal") == ["thermal_zone0"]
    assert not fs.exists("/sys/class/thermal/thermal_zone5")
    with pytest.raises(FileNotFoundError):
        fs.read_text("/sys/class/thermal/thermal_zone5/temp")
    with pytest.raises(FileNotFoundError):
        fs.read_text("/proc/uptime")  # not in the overlay tree


def test_emulated_sysfs_wrong_kind_of_path_errors(room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    with pytest.raises(IsADirectoryError):
        fs.read_text(DEV)
    with pytest.raises(NotADirectoryError):
        fs.listdir(f"{DEV}/name")
    with pytest.raises(FileNotFoundError):
        fs.read_text(f"{DEV}/in_pressure_input")
    assert not fs.is_dir(f"{DEV}/name")


def test_emulated_sysfs_rebind_moves_and_removes_the_device(room: RoomSimulator, clock: ManualClock) -> None:
    fs = EmulatedSysfs(room, clock=clock)
    fs.rebind_dht(3)
    assert fs.glob("/sys/bus/iio/devices/*") == ["/sys/bus/iio/devices/iio:device3"]
    assert not fs.exists(DEV)
    assert fs.read_text("/sys/bus/iio/devices/iio:device3/in_temp_input") == "21300\n"
    fs.rebind_dht(None)
    assert fs.glob("/sys/bus/iio/devices/*") == []


def _in_thread(fn: Callable[[], Any], seconds: float = 5.0) -> Any:
    """Run fn with a deadline, so a lock-order bug fails fast instead of hanging the suite."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"{fn} did not return within {seconds} s (deadlock?)")
    return out[0]


def test_mock_context_hands_out_an_emulated_sysfs(tmp_path: Path, clock: ManualClock) -> None:
    ctx = HalContext("mock", node="pi4", state_dir=tmp_path, clock=clock)
    fs = _in_thread(ctx.sysfs)
    assert isinstance(fs, EmulatedSysfs)
    assert fs is _in_thread(ctx.sysfs)
    milli = int(fs.read_text(f"{DEV}/in_temp_input"))
    assert milli % 100 == 0 and -40_000 <= milli <= 80_000
    assert milli == round(ctx.room.at(clock.t).temperature * 10) * 100
