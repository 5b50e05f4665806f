"""A sysfs tree for mock mode: the dht11 IIO device and a CPU thermal zone measure the room.

Only the files a real Pi's kernel would compute are virtual; every other path (/proc/stat,
/proc/meminfo, ...) is read from the real filesystem under `overlay_base`, so the system
monitor reports this machine. The dht11 files follow drivers/iio/humidity/dht11.c:
a successful measurement is cached for 2 s (both channels answer from the cache); a failed
one is not cached, so the next read measures again; checksum errors give EIO and missing
edges ETIMEDOUT. A DHT22 reports 0.1 °C / 0.1 %RH steps, which the driver scales by 100.

Other emulated kernel devices (the 1-wire bus of hal.emulated.w1) `mount` a VirtualTree:
their files and directories are served like the built-in ones and hide the real tree there.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hal.emulated import HISTORY
from hal.sysfs import SysfsRoot, glob_paths, kernel_path

IIO_DEVICES = "/sys/bus/iio/devices"
THERMAL = "/sys/class/thermal"
DHT_VALID_S = 2.0  # DHT11_DATA_VALID_TIME in the kernel driver
DHT_FILES = ("in_temp_input", "in_humidityrelative_input")

Producer = Callable[[str], str]  # kernel path -> file content; may raise OSError like the driver


class VirtualTree(Protocol):
    """Computed files for EmulatedSysfs.mount: asked afresh on every lookup, so it may change."""

    def tree(self) -> tuple[dict[str, Producer], dict[str, list[str]]]:
        """(file path -> producer, directory path -> names in it), absolute kernel paths."""
        ...


@dataclass(frozen=True)
class DhtMeasurement:
    """One measurement the emulated driver started: when, and what came of it."""

    t: float
    outcome: str  # "ok" | "EIO" | "ETIMEDOUT"
    temperature_milli: int | None = None
    humidity_milli: int | None = None


class EmulatedSysfs:
    """Same interface as SysfsRoot; dht11 and thermal files are computed from the room at clock()."""

    def __init__(self, room: Any, clock: Callable[[], float] = time.time,
                 overlay_base: str | Path = "/", fault_rate: float = 0.0, seed: int = 1,
                 iio_index: int | None = 0, history: int = HISTORY) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within 0..1, got {fault_rate!r}")
        self.room = room
        self.clock = clock
        self.fault_rate = fault_rate
        self._real = SysfsRoot(overlay_base)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cached: DhtMeasurement | None = None
        # Every measurement the driver started, so tests can check how hard a reader polls.
        self.history: deque[DhtMeasurement] = deque(maxlen=history)  # the most recent, bounded
        self._files: dict[str, Producer] = {}
        self._dirs: dict[str, list[str]] = {}
        self._mounts: dict[str, VirtualTree] = {}
        self.rebind_dht(iio_index)

    def __repr__(self) -> str:
        return f"EmulatedSysfs(overlay_base={str(self._real.base)!r}, fault_rate={self.fault_rate})"

    # -- the virtual tree ------------------------------------------------------------

    def rebind_dht(self, iio_index: int | None) -> None:
        """Move the dht11 device to iio:deviceN, as a reboot or overlay reload does (None removes it)."""
        files: dict[str, Producer] = {
            f"{THERMAL}/thermal_zone0/type": lambda _p: "cpu-thermal\n",
            f"{THERMAL}/thermal_zone0/temp": self._cpu_temp,
        }
        dirs = {IIO_DEVICES: [], THERMAL: ["thermal_zone0"], f"{THERMAL}/thermal_zone0": ["temp", "type"]}
        if iio_index is not None:
            dev = f"{IIO_DEVICES}/iio:device{int(iio_index)}"
            dirs[IIO_DEVICES] = [f"iio:device{int(iio_index)}"]
            dirs[dev] = ["in_humidityrelative_input", "in_temp_input", "name"]
            files[f"{dev}/name"] = lambda _p: "dht11\n"
            for channel in DHT_FILES:
                files[f"{dev}/{channel}"] = self._dht_channel
        with self._lock:
            self._files, self._dirs = files, dirs

    def mount(self, name: str, tree: VirtualTree) -> None:
        """Serve another emulated device's files under `name` (replacing one mounted as that)."""
        with self._lock:
            self._mounts[name] = tree

    def mounted(self, name: str) -> VirtualTree | None:
        """The tree mounted under `name`, if any."""
        with self._lock:
            return self._mounts.get(name)

    def unmount(self, name: str) -> None:
        """Stop serving a mounted tree (nothing happens if none is mounted as `name`)."""
        with self._lock:
            self._mounts.pop(name, None)

    def _tree(self) -> tuple[dict[str, Producer], dict[str, list[str]]]:
        """The built-in virtual files merged with every mounted tree's, as they are now."""
        with self._lock:
            files, dirs = dict(self._files), dict(self._dirs)
            mounts = list(self._mounts.values())
        # Outside the lock: a mounted tree has its own lock and may call back into this one.
        for mount in mounts:
            more_files, more_dirs = mount.tree()
            files.update(more_files)
            for d, names in more_dirs.items():
                dirs[d] = sorted(set(dirs.get(d, ())) | set(names))
        return files, dirs

    @staticmethod
    def _virtual_root(path: str, dirs: dict[str, list[str]]) -> bool:
        """True when the path lies inside a virtual directory, which hides the real one."""
        return any(path == d or path.startswith(d + "/") for d in dirs)

    @staticmethod
    def _ancestors(dirs: dict[str, list[str]]) -> set[str]:
        """Directories above the virtual ones (/sys, /sys/bus, ...), which must exist too."""
        out: set[str] = set()
        for d in dirs:
            parts = d.split("/")
            for i in range(2, len(parts)):
                out.add("/".join(parts[:i]))
        out.add("/")
        return out - set(dirs)

    # -- SysfsRoot interface ---------------------------------------------------------

    def read_text(self, path: str) -> str:
        """Read an attribute: computed for virtual files, from the real tree otherwise."""
        p = str(kernel_path(path))
        files, dirs = self._tree()
        produce = files.get(p)
        if produce is not None:
            return produce(p)
        if p in dirs:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), p)
        if self._virtual_root(p, dirs):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)
        return self._real.read_text(p)

    def listdir(self, path: str) -> list[str]:
        """Names in a directory; virtual directories replace real ones, ancestors merge both."""
        p = str(kernel_path(path))
        files, dirs = self._tree()
        names = dirs.get(p)
        if names is not None:
            return sorted(names)
        if p in files:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), p)
        if self._virtual_root(p, dirs):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)
        if p in self._ancestors(dirs):
            prefix = p.rstrip("/") + "/"
            virtual = {d[len(prefix):].split("/")[0] for d in dirs if d.startswith(prefix)}
            real: set[str] = set()
            if self._real.is_dir(p):
                real = set(self._real.listdir(p))
            return sorted((real | virtual) - {""})
        return self._real.listdir(p)

    def exists(self, path: str) -> bool:
        """True for virtual files and directories, and for real paths outside virtual ones."""
        p = str(kernel_path(path))
        files, dirs = self._tree()
        if p in files or p in dirs or p in self._ancestors(dirs):
            return True
        return False if self._virtual_root(p, dirs) else self._real.exists(p)

    def is_dir(self, path: str) -> bool:
        """True for directories, virtual or real."""
        p = str(kernel_path(path))
        files, dirs = self._tree()
        if p in dirs:
            return True
        if p in files:
            return False
        if p in self._ancestors(dirs):
            return True
        return False if self._virtual_root(p, dirs) else self._real.is_dir(p)

    def glob(self, pattern: str) -> list[str]:
        """Absolute paths matching a shell pattern over the merged tree, sorted."""
        return glob_paths(pattern, self.listdir, self.is_dir, self.exists)

    # -- dynamic files ---------------------------------------------------------------

    def _cpu_temp(self, _path: str) -> str:
        return f"{round(self.room.at(self.clock()).cpu_temperature * 1000)}\n"

    def _dht_channel(self, path: str) -> str:
        now = self.clock()
        with self._lock:
            m = self._cached
            if m is None or now > m.t + DHT_VALID_S:
                m = self._measure(now)
                self.history.append(m)
                if m.outcome != "ok":
                    code = errno.EIO if m.outcome == "EIO" else errno.ETIMEDOUT
                    raise OSError(code, os.strerror(code), path)
                self._cached = m
        value = m.temperature_milli if path.endswith("in_temp_input") else m.humidity_milli
        return f"{value}\n"

    def _measure(self, now: float) -> DhtMeasurement:
        """One start signal on the data line: a fault or a fresh 0.1-step reading of the room."""
        if self.fault_rate and self._rng.random() < self.fault_rate:
            # On a busy Pi most failures are checksum errors (a late edge misread as a bit);
            # whole frames lost to missed interrupts are rarer.
            return DhtMeasurement(now, "EIO" if self._rng.random() < 0.7 else "ETIMEDOUT")
        cond = self.room.at(now)
        temp = min(max(cond.temperature, -40.0), 80.0)
        hum = min(max(cond.humidity, 0.0), 99.9)
        return DhtMeasurement(now, "ok", round(temp * 10) * 100, round(hum * 10) * 100)
