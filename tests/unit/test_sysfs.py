"""SysfsRoot: kernel paths resolved under a base directory, errors with their errno."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from hal.sysfs import MAX_KEPT_PATHS, SysfsRoot, glob_paths


def make_tree(base: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = base / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@pytest.fixture
def root(tmp_path: Path) -> SysfsRoot:
    make_tree(tmp_path, {
        "/sys/bus/iio/devices/iio:device0/name": "dht11\n",
        "/sys/bus/iio/devices/iio:device0/in_temp_input": "21300\n",
        "/sys/bus/iio/devices/iio:device1/name": "mcp3008\n",
        "/sys/bus/iio/devices/.hidden/name": "x\n",
        "/sys/class/thermal/thermal_zone0/temp": "48312\n",
        "/proc/uptime": "123.45 200.00\n",
    })
    return SysfsRoot(tmp_path)


def test_sysfs_read_text_resolves_under_base(root: SysfsRoot) -> None:
    assert root.read_text("/sys/bus/iio/devices/iio:device0/name") == "dht11\n"
    assert root.read_text("/proc/uptime").split()[0] == "123.45"


def test_sysfs_keeps_the_host_path_of_a_file_it_reads_every_poll(root: SysfsRoot, tmp_path: Path) -> None:
    first = root.host_path("/proc/uptime")
    assert first == tmp_path / "proc" / "uptime"
    assert root.host_path("/proc/uptime") is first  # no Path built (and its parts interned) again
    with pytest.raises(ValueError, match="'..'"):  # a refused path is refused every time, never kept
        root.host_path("/sys/../etc/passwd")
    with pytest.raises(ValueError, match="'..'"):
        root.host_path("/sys/../etc/passwd")
    for i in range(600):  # bounded: a glob over a big tree does not grow it for ever
        root.host_path(f"/sys/bus/w1/devices/28-{i:012x}/temperature")
    assert len(root._paths) == MAX_KEPT_PATHS


def test_sysfs_listdir_sorted_and_exists(root: SysfsRoot) -> None:
    assert root.listdir("/sys/bus/iio/devices") == [".hidden", "iio:device0", "iio:device1"]
    assert root.exists("/sys/class/thermal/thermal_zone0/temp")
    assert not root.exists("/sys/class/thermal/thermal_zone1")
    assert root.is_dir("/sys/class/thermal") and not root.is_dir("/proc/uptime")


def test_sysfs_glob_matches_components_and_skips_hidden(root: SysfsRoot) -> None:
    assert root.glob("/sys/bus/iio/devices/*") == [
        "/sys/bus/iio/devices/iio:device0", "/sys/bus/iio/devices/iio:device1"]
    assert root.glob("/sys/bus/iio/devices/iio:device*/name") == [
        "/sys/bus/iio/devices/iio:device0/name", "/sys/bus/iio/devices/iio:device1/name"]
    assert root.glob("/sys/bus/iio/devices/.h*/name") == ["/sys/bus/iio/devices/.hidden/name"]
    assert root.glob("/sys/class/thermal/thermal_zone*") == ["/sys/class/thermal/thermal_zone0"]


def test_sysfs_glob_of_missing_directory_is_empty(root: SysfsRoot) -> None:
    assert root.glob("/sys/class/hwmon/hwmon*/temp1_input") == []
    assert root.glob("/nothing/here") == []
    # A file in the middle of a pattern cannot be descended into.
    assert root.glob("/proc/uptime/*") == []


def test_sysfs_missing_file_raises_enoent(root: SysfsRoot) -> None:
    with pytest.raises(OSError) as info:
        root.read_text("/sys/bus/iio/devices/iio:device7/name")
    assert info.value.errno == errno.ENOENT


def test_sysfs_directory_read_raises_eisdir(root: SysfsRoot) -> None:
    with pytest.raises(OSError) as info:
        root.read_text("/sys/bus/iio/devices")
    assert info.value.errno == errno.EISDIR


@pytest.mark.parametrize("bad", ["sys/class", "", "/sys/../etc/passwd"])
def test_sysfs_rejects_relative_and_escaping_paths(root: SysfsRoot, bad: str) -> None:
    with pytest.raises(ValueError):
        root.read_text(bad)


def test_sysfs_root_reads_the_real_machine() -> None:
    real = SysfsRoot("/")
    assert float(real.read_text("/proc/uptime").split()[0]) > 0
    assert "MemTotal" in real.read_text("/proc/meminfo")


def test_glob_paths_ignores_directory_that_vanishes_while_listing() -> None:
    def listdir(path: str) -> list[str]:
        if path == "/sys":
            return ["a", "b"]
        raise FileNotFoundError(errno.ENOENT, "gone", path)

    found = glob_paths("/sys/*/x*", listdir, lambda p: p in ("/", "/sys", "/sys/a", "/sys/b"),
                       lambda p: True)
    assert found == []
