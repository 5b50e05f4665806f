"""An emulated 1-wire bus with DS18B20 probes, served in the emulated sysfs like w1-therm does.

Files follow drivers/w1/slaves/w1_therm.c: `w1_slave` is two lines, the scratchpad with the
CRC the kernel computed over its first 8 bytes and YES/NO, then the last good scratchpad with
`t=` in millidegrees, which the kernel computes from the bytes just read (even bad ones) and
does not mask for the resolution. A failed read returns an empty file. The scratchpad layout,
the 85 °C power-on value and the resolution bits are from the Maxim DS18B20 datasheet (memory
map, configuration register, table 1). Faults are injected per probe with `fail_next` or at
`crc_error_rate`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.crc import dallas_crc8
from hal.emulated import HISTORY

if TYPE_CHECKING:
    from hal.context import HalContext
    from hal.emulated.sysfs import EmulatedSysfs, Producer

W1_DEVICES = "/sys/bus/w1/devices"
MASTER = "w1_bus_master1"
DEFAULT_ID = "28-00000a1b2c3d"
MOUNT = "w1"
POWER_ON_SCRATCHPAD = bytes.fromhex("50054b467fff0c101c")  # datasheet: +85 °C, TH 75, TL 70, 12 bit
FAULTS = ("crc", "power_on", "zeros", "empty")
T_RANGE = (-55.0, 125.0)  # what the probe can convert

_LOCK = threading.Lock()  # one w1 master per emulated sysfs, even when two sensors start at once


@dataclass(frozen=True, slots=True)
class Conversion:
    """One read of w1_slave: when, what the probe saw, and what came of it."""

    t: float
    temperature: float | None  # the probe's own temperature (None for a fault without one)
    outcome: str  # "ok" or one of FAULTS
    text: str


class EmulatedDs18b20:
    """One probe: its scratchpad follows its temperature, which follows the room with a lag."""

    def __init__(self, device_id: str, room: Any, clock: Callable[[], float] = time.time,
                 resolution: int = 12, lag_s: float = 0.0, crc_error_rate: float = 0.0, seed: int = 1,
                 history: int = HISTORY) -> None:
        if not (device_id.startswith("28-") and len(device_id) == 15):
            raise ValueError(f"a DS18B20 id is 28- and 12 hex digits, got {device_id!r}")
        if resolution not in (9, 10, 11, 12):
            raise ValueError(f"resolution must be 9..12 bits, got {resolution!r}")
        if lag_s < 0 or not 0.0 <= crc_error_rate <= 1.0:
            raise ValueError(f"lag_s must be >= 0 and crc_error_rate within 0..1, got {lag_s}, {crc_error_rate}")
        self.id = device_id
        self.room = room
        self.clock = clock
        self.resolution = resolution
        self.lag_s = lag_s  # first-order time constant: a probe in soil or water follows the air slowly
        self.crc_error_rate = crc_error_rate
        self.present = True
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._temperature: tuple[float, float] | None = None  # (time, °C) of the last conversion
        self._last_good = bytes(9)  # what the kernel keeps in family_data for the second line
        self._faults: deque[str] = deque()
        self.history: deque[Conversion] = deque(maxlen=history)

    def fail_next(self, fault: str, count: int = 1) -> None:
        """Make the next `count` reads fail: "crc", "power_on" (85 °C reset value), "zeros", "empty"."""
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        with self._lock:
            self._faults.extend([fault] * count)

    def scratchpad(self, temperature: float) -> bytes:
        """The nine bytes after a conversion at this temperature and the probe's resolution."""
        t = min(max(temperature, T_RANGE[0]), T_RANGE[1])
        drop = 12 - self.resolution
        raw = round(t * 16 / (1 << drop)) << drop
        # The bits below the resolution are undefined in the datasheet: fill them so a reader must mask.
        raw |= self._rng.getrandbits(drop) if drop else 0
        raw &= 0xFFFF
        config = 0x1F | ((self.resolution - 9) << 5)
        data = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, config, 0xFF, (0x10 - (raw & 0x0F)) & 0xFF, 0x10])
        return data + bytes([dallas_crc8(data)])

    def w1_slave(self, _path: str = "") -> str:
        """The file content of one read: a conversion now (the kernel blocks while it runs)."""
        now = self.clock()
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            if fault is None and self.crc_error_rate and self._rng.random() < self.crc_error_rate:
                fault = "crc"
            temperature = self._follow(now)
            if fault == "empty":
                text = ""
            elif fault == "power_on":
                text = self._render(POWER_ON_SCRATCHPAD)
            elif fault == "zeros":  # data line held low: every bit reads 0, and so does the CRC
                text = self._render(bytes(9))
            else:
                data = self.scratchpad(temperature)
                if fault == "crc":
                    bad = bytearray(data)
                    bad[self._rng.randrange(9)] ^= 1 << self._rng.randrange(8)
                    data = bytes(bad)
                text = self._render(data)
            self.history.append(Conversion(now, temperature, fault or "ok", text))
            return text

    def _follow(self, now: float) -> float:
        air = self.room.at(now).temperature
        if self.lag_s <= 0 or self._temperature is None:
            value = air
        else:
            then, previous = self._temperature
            alpha = 1.0 - math.exp(-max(0.0, now - then) / self.lag_s)
            value = previous + alpha * (air - previous)
        self._temperature = (now, value)
        return value

    def _render(self, data: bytes) -> str:
        crc = dallas_crc8(data[:8])
        good = crc == data[8]
        if good:
            self._last_good = data
        raw = int.from_bytes(data[:2], "little", signed=True)
        milli = abs(raw) * 1000 // 16  # C integer division truncates towards zero
        hexes = " ".join(f"{b:02x}" for b in data)
        kept = " ".join(f"{b:02x}" for b in self._last_good)
        return f"{hexes} : crc={crc:02x} {'YES' if good else 'NO'}\n{kept} t={-milli if raw < 0 else milli}\n"

    def temperature_file(self, path: str) -> str:
        """Newer kernels' `temperature` attribute: millidegrees only (empty on a failed read)."""
        text = self.w1_slave(path)
        return text.rsplit("t=", 1)[1] if "t=" in text else ""


class EmulatedW1Master:
    """The w1-gpio bus master: the probes on it, mounted in an emulated sysfs as a VirtualTree."""

    def __init__(self, room: Any, clock: Callable[[], float] = time.time, history: int = HISTORY) -> None:
        self.room = room
        self.clock = clock
        self.history = history
        self._lock = threading.Lock()
        self._probes: dict[str, EmulatedDs18b20] = {}

    def add_probe(self, device_id: str = DEFAULT_ID, **kwargs: Any) -> EmulatedDs18b20:
        """Connect a probe (kwargs as EmulatedDs18b20's); an id already on the bus is returned as is."""
        with self._lock:
            probe = self._probes.get(device_id)
            if probe is None:
                kwargs.setdefault("history", self.history)
                probe = EmulatedDs18b20(device_id, self.room, clock=self.clock, **kwargs)
                self._probes[device_id] = probe
            return probe

    def probe(self, device_id: str) -> EmulatedDs18b20:
        """A probe on the bus, connected or not."""
        with self._lock:
            return self._probes[device_id]

    def ids(self) -> list[str]:
        """Ids of the connected probes, sorted as the kernel lists them."""
        with self._lock:
            return sorted(i for i, p in self._probes.items() if p.present)

    def unplug(self, device_id: str) -> None:
        """The probe leaves the bus: its directory disappears, as after the kernel's next search."""
        self.probe(device_id).present = False

    def plug(self, device_id: str) -> None:
        """The probe is back."""
        self.probe(device_id).present = True

    def tree(self) -> tuple[dict[str, Producer], dict[str, list[str]]]:
        """The w1 part of sysfs as it is now (the VirtualTree protocol)."""
        ids = self.ids()
        master = f"{W1_DEVICES}/{MASTER}"
        files: dict[str, Producer] = {
            f"{master}/w1_master_slaves": lambda _p: "".join(f"{i}\n" for i in ids) or "not found.\n",
            f"{master}/w1_master_slave_count": lambda _p: f"{len(ids)}\n",
        }
        dirs = {W1_DEVICES: [MASTER, *ids], master: ["w1_master_slave_count", "w1_master_slaves"]}
        for i in ids:
            probe = self.probe(i)
            files[f"{W1_DEVICES}/{i}/name"] = lambda _p, i=i: f"{i}\n"
            files[f"{W1_DEVICES}/{i}/resolution"] = lambda _p, p=probe: f"{p.resolution}\n"
            files[f"{W1_DEVICES}/{i}/temperature"] = probe.temperature_file
            files[f"{W1_DEVICES}/{i}/w1_slave"] = probe.w1_slave
            dirs[f"{W1_DEVICES}/{i}"] = ["name", "resolution", "temperature", "w1_slave"]
        return files, dirs


def w1_master(fs: EmulatedSysfs) -> EmulatedW1Master:
    """The emulated 1-wire master of an emulated sysfs, mounted on first use."""
    with _LOCK:
        master = fs.mounted(MOUNT)
        if master is None:
            history = fs.history.maxlen or HISTORY
            master = EmulatedW1Master(fs.room, clock=fs.clock, history=history)
            fs.mount(MOUNT, master)
        if not isinstance(master, EmulatedW1Master):
            raise TypeError(f"{MOUNT!r} is mounted by {master!r}, not a 1-wire master")
        return master


def emulate_ds18b20(ctx: HalContext, params: dict[str, Any]) -> None:
    """Mock mode: connect the configured probe (or, for device = "", one unless a probe is there)."""
    master = w1_master(ctx.sysfs())
    device = params.get("device") or ""
    if device:
        master.add_probe(device)
    elif not master.ids():
        master.add_probe(DEFAULT_ID)
