"""DS18B20 1-wire temperature probe through the kernel's w1-therm driver (dtoverlay=w1-gpio).

Reading /sys/bus/w1/devices/28-*/w1_slave makes the kernel convert (up to 750 ms at 12 bit)
and print the scratchpad twice: `<9 bytes> : crc=xx YES|NO`, then `<9 bytes> t=<m°C>`. The
value is decoded here from the first line's bytes, after checking their Dallas CRC ourselves:
bytes 0-1 are the temperature, signed, in 1/16 °C; byte 4 is the configuration register
whose R1 R0 bits select 9-12 bit resolution, the bits below it being undefined (Maxim DS18B20
datasheet: temperature register format, table 1, memory map, configuration register). `t=` must agree with the same bytes (the kernel does
not mask the undefined bits). 0x0550 (+85 °C) is the power-on reset value: the probe lost
power or was reset before converting, so it is reported unavailable (a true 85.000 °C is
lost with it, above the readings table's temperature range anyway).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hal.crc import dallas_crc8
from hal.driver import SensorDriver
from hal.errors import DeviceUnavailable, HalConfigError, ImplausibleValue
from hal.readings import Reading

if TYPE_CHECKING:
    from hal.context import HalContext

log = logging.getLogger(__name__)

W1_DEVICES = "/sys/bus/w1/devices"
FAMILY = "28-"  # DS18B20 family code
POWER_ON_RAW = 0x0550  # +85 °C, the temperature register's reset value
_ID = re.compile(r"28-[0-9a-f]{12}\Z")
_CRC_LINE = re.compile(r"((?:[0-9a-f]{2}\s+){9}):\s*crc=([0-9a-f]{2})\s+(YES|NO)\s*\Z", re.IGNORECASE)
_T_LINE = re.compile(r"((?:[0-9a-f]{2}\s+){9})t=(-?\d+)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class W1Slave:
    """What one read of w1_slave said."""

    scratchpad: bytes  # the nine bytes just read (first line)
    kernel_crc_ok: bool  # the kernel's YES/NO
    t_milli: int  # the kernel's t=, millidegrees


def parse_w1_slave(text: str) -> W1Slave:
    """The two lines of w1_slave; DeviceUnavailable when empty, ImplausibleValue when garbled."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or not lines[0]:
        raise DeviceUnavailable("w1_slave was empty: the kernel got no answer from the probe "
                                "(loose wire or missing pull-up?)")
    first = _CRC_LINE.match(lines[0])
    second = _T_LINE.match(lines[1]) if len(lines) > 1 else None
    if first is None or second is None:
        raise ImplausibleValue(f"unreadable w1_slave: {text.strip()[:120]!r}")
    return W1Slave(bytes.fromhex("".join(first.group(1).split())), first.group(3).upper() == "YES",
                   int(second.group(2)))


def resolution_bits(config: int) -> int:
    """9..12 from the configuration register's R1 R0 bits (6 and 5)."""
    return 9 + ((config >> 5) & 0x03)


def raw_temperature(scratchpad: bytes) -> int:
    """The signed 16-bit temperature register, in 1/16 °C, undefined low bits included."""
    return int.from_bytes(scratchpad[:2], "little", signed=True)


def decode_temperature(scratchpad: bytes) -> float:
    """°C from the scratchpad, with the bits below the configured resolution masked off."""
    undefined = 12 - resolution_bits(scratchpad[4])
    return (raw_temperature(scratchpad) & ~((1 << undefined) - 1)) / 16.0


def kernel_millidegrees(scratchpad: bytes) -> int:
    """What w1-therm prints as t=: raw * 1000 / 16 in C integer arithmetic (truncated, unmasked)."""
    raw = raw_temperature(scratchpad)
    milli = abs(raw) * 1000 // 16
    return -milli if raw < 0 else milli


def check_reading(slave: W1Slave) -> float:
    """°C from a parsed w1_slave, or ImplausibleValue saying what is wrong with it."""
    pad = slave.scratchpad
    shown = " ".join(f"{b:02x}" for b in pad)
    crc = dallas_crc8(pad[:8])
    if crc != pad[8] or not slave.kernel_crc_ok:
        said = "YES" if slave.kernel_crc_ok else "NO"
        raise ImplausibleValue(f"CRC error: scratchpad {shown} has CRC {crc:02x}, not {pad[8]:02x} "
                               f"(the kernel said {said}); noise or a long, unshielded cable?")
    if pad[:8] == bytes(8):
        # A CRC over zeros is zero, so this passes the check: the data line was held low.
        raise ImplausibleValue("scratchpad read as all zeros: the data line is held low (short circuit?)")
    if pad[4] & 0x80:
        raise ImplausibleValue(f"configuration register {pad[4]:02x} is not a DS18B20's (bit 7 set)")
    if raw_temperature(pad) == POWER_ON_RAW:
        raise ImplausibleValue("85 °C power-on value: the probe reset or lost power before converting "
                               "(parasite power or a weak supply?)")
    if kernel_millidegrees(pad) != slave.t_milli:
        raise ImplausibleValue(f"the kernel's t={slave.t_milli} disagrees with scratchpad {shown} "
                               f"({kernel_millidegrees(pad)} m°C)")
    return decode_temperature(pad)


class Ds18b20Sensor(SensorDriver[float]):
    """One DS18B20 by its 1-wire id, or the first one the kernel lists; close() has nothing to
    release (w1_slave is opened per read)."""

    kind = "ds18b20"
    quantities = ("temperature",)

    def __init__(self, ctx: HalContext, name: str, device: str = "") -> None:
        if not isinstance(device, str) or not (device == "" or _ID.match(device)):
            raise HalConfigError(f"{name}: device must be 28- and 12 lowercase hex digits, "
                                 f"or '' for the first probe, got {device!r}")
        super().__init__(ctx, name, log, "DS18B20")
        self.device = device
        self._chosen: str | None = None

    def __repr__(self) -> str:
        return f"Ds18b20Sensor(name={self.name!r}, device={self.device or self._chosen or 'first'!r})"

    @property
    def device_id(self) -> str | None:
        """The probe in use: the configured id, or the first one found (None before a read)."""
        return self.device or self._chosen

    def _report(self, value: float) -> list[Reading]:
        """The temperature; a failed reading if the readings table refuses the value."""
        return self._measured("temperature", value)

    def _measure(self) -> float:
        fs = self._ctx.sysfs()
        device = self._find(fs)
        path = f"{W1_DEVICES}/{device}/w1_slave"
        try:
            text = fs.read_text(path)
        except FileNotFoundError:
            raise DeviceUnavailable(f"1-wire probe {device} left {W1_DEVICES} while being read "
                                    "(unplugged?)") from None
        except OSError as exc:
            raise DeviceUnavailable(f"reading {path}: {exc}") from exc
        return check_reading(parse_w1_slave(text))

    def _find(self, fs: Any) -> str:
        present = self._present(fs)
        if self.device:
            if self.device in present:
                return self.device
            others = f"; present: {', '.join(present)}" if present else ""
            raise DeviceUnavailable(f"1-wire probe {self.device} not found under {W1_DEVICES} "
                                    f"(unplugged?{others})")
        if not present:
            raise DeviceUnavailable(f"no DS18B20 (28-*) under {W1_DEVICES}: none connected, or a wiring fault")
        if present[0] != self._chosen:
            log.info("%s: using 1-wire probe %s (the first of %d)", self.name, present[0], len(present))
            self._chosen = present[0]
        return present[0]

    def _present(self, fs: Any) -> list[str]:
        """Ids of the DS18B20s the kernel lists, sorted."""
        if not fs.exists(W1_DEVICES):
            raise DeviceUnavailable(f"no 1-wire bus: {W1_DEVICES} does not exist "
                                    "(add dtoverlay=w1-gpio to config.txt and reboot)")
        return sorted(p.rsplit("/", 1)[1] for p in fs.glob(f"{W1_DEVICES}/{FAMILY}*"))
