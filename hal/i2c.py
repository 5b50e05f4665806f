"""The I2C bus layer: opening /dev/i2c-N, per-transaction retries, per-address grants.

Retries are per transaction because a shared bus fails transfers independently: at a
10 % error rate a 12-transaction measurement retried as a whole succeeds only 28 % of the
time, while six tries per transfer leave a failure chance of one in a million each.

Linux grants I2C per bus (/dev/i2c-1, group i2c), never per address, so the per-address
grants below are enforced here; they are a real boundary only for sandboxed plugins,
which never see the bus object, only I2CDevice handles.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hal.errors import BusError, DeviceUnavailable, HalConfigError, PermissionDenied

log = logging.getLogger(__name__)

# NACK (no device answered / arbitration trouble), I/O error, clock stretching timeout
RETRYABLE = frozenset({errno.EREMOTEIO, errno.EIO, errno.ETIMEDOUT})
MODES = ("r", "rw")


def open_bus(number: int) -> Any:
    """Open /dev/i2c-N with smbus2 (imported here, so mock mode never needs it)."""
    try:
        import smbus2
    except ImportError as exc:
        raise DeviceUnavailable("smbus2 is not installed; install the 'real' extra "
                                "(pip install 'wasi-harvester[real]')") from exc
    try:
        return smbus2.SMBus(number)
    except FileNotFoundError as exc:
        raise DeviceUnavailable(f"/dev/i2c-{number} does not exist: enable I2C with raspi-config "
                                "(Interface Options -> I2C) or dtparam=i2c_arm=on, then reboot") from exc
    except PermissionError as exc:
        raise DeviceUnavailable(f"no permission to open /dev/i2c-{number}: add the user to the "
                                "'i2c' group") from exc
    except OSError as exc:
        raise DeviceUnavailable(f"cannot open /dev/i2c-{number}: {exc}") from exc


class RetryingBus:
    """Wraps an SMBus-like object; retries each transfer on EREMOTEIO/EIO/ETIMEDOUT with backoff."""

    def __init__(self, bus: Any, retries: int = 5, backoff: float = 0.002,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if retries < 0 or backoff < 0:
            raise HalConfigError(f"retries and backoff must be >= 0, got {retries!r}, {backoff!r}")
        self.bus = bus
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        # smbus2 sets the slave address and transfers in two ioctls: keep them together
        self._lock = threading.RLock()
        self.stats = {"transactions": 0, "retries": 0, "failures": 0}

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        """Read one register."""
        return self._call("read_byte_data", i2c_addr, register)

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write one register."""
        self._call("write_byte_data", i2c_addr, register, value)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read `length` bytes starting at a register."""
        return list(self._call("read_i2c_block_data", i2c_addr, register, length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        """Write bytes after a register address."""
        self._call("write_i2c_block_data", i2c_addr, register, list(data))

    def i2c_rdwr(self, *msgs: Any) -> None:
        """Combined transfer of i2c_msg objects (the whole combination is retried)."""
        addr = msgs[0].addr if msgs else None
        self._call("i2c_rdwr", addr, None, *msgs)

    def close(self) -> None:
        """Close the underlying bus."""
        with self._lock:
            self.bus.close()

    def _call(self, method: str, addr: int | None, register: int | None, *args: Any) -> Any:
        fn = getattr(self.bus, method)
        call_args = args if register is None else (addr, register, *args)
        with self._lock:
            self.stats["transactions"] += 1
        for attempt in range(self.retries + 1):
            try:
                with self._lock:
                    return fn(*call_args)
            except OSError as exc:
                if exc.errno not in RETRYABLE:
                    raise
                if attempt == self.retries:
                    with self._lock:
                        self.stats["failures"] += 1
                    where = _fmt(addr) + ("" if register is None else f" register 0x{register:02x}")
                    raise BusError(f"I2C {method} at {where} failed after {attempt + 1} tries: "
                                   f"errno {exc.errno} ({errno.errorcode.get(exc.errno, '?')}): "
                                   f"{exc.strerror or exc}") from exc
                with self._lock:
                    self.stats["retries"] += 1
                # sleep outside the lock so other devices on the bus are not held up
                self._sleep(self.backoff * (2 ** attempt))
        raise AssertionError("unreachable")  # the loop returns or raises


class I2CDevice:
    """A handle on one address of one bus; it cannot address anything else."""

    def __init__(self, bus: Any, address: int, writable: bool = True, bus_number: int | None = None) -> None:
        _check_address(address)
        self._bus = bus
        self.address = address
        self.writable = writable
        self.bus_number = bus_number

    def __repr__(self) -> str:
        return f"I2CDevice(bus={self.bus_number}, address=0x{self.address:02x}, {'rw' if self.writable else 'r'})"

    def read_byte(self, reg: int) -> int:
        """Read one register."""
        _check_register(reg)
        return int(self._bus.read_byte_data(self.address, reg))

    def read_block(self, reg: int, n: int) -> list[int]:
        """Read n (1..32) bytes starting at a register."""
        _check_register(reg)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 32:
            raise HalConfigError(f"block length must be 1..32, got {n!r}")
        return list(self._bus.read_i2c_block_data(self.address, reg, n))

    def write_byte(self, reg: int, value: int) -> None:
        """Write one register (refused on a read-only handle)."""
        self._check_writable(reg)
        _check_byte(value)
        self._bus.write_byte_data(self.address, reg, value)

    def write_block(self, reg: int, data: Iterable[int]) -> None:
        """Write 1..32 bytes after a register address (refused on a read-only handle)."""
        self._check_writable(reg)
        values = list(data)
        if not 1 <= len(values) <= 32:
            raise HalConfigError(f"block length must be 1..32, got {len(values)}")
        for v in values:
            _check_byte(v)
        self._bus.write_i2c_block_data(self.address, reg, values)

    def _check_writable(self, reg: int) -> None:
        _check_register(reg)
        if not self.writable:
            raise PermissionDenied(f"I2C 0x{self.address:02x} on bus {self.bus_number} is granted "
                                   f"read-only; write to register 0x{reg:02x} refused")


class I2CGrants:
    """Hands out I2CDevice handles for granted (bus, address) pairs and nothing else."""

    def __init__(self, grants: Iterable[tuple[int, int, str]], open_bus: Callable[[int], Any]) -> None:
        self._grants: dict[tuple[int, int], str] = {}
        for grant in grants:
            try:
                bus, address, mode = grant
            except (TypeError, ValueError):
                raise HalConfigError(f"an I2C grant is (bus, address, 'r'|'rw'), got {grant!r}") from None
            if isinstance(bus, bool) or not isinstance(bus, int) or bus < 0:
                raise HalConfigError(f"I2C grant bus must be an integer >= 0, got {bus!r}")
            _check_address(address)
            if mode not in MODES:
                raise HalConfigError(f"I2C grant mode must be 'r' or 'rw', got {mode!r}")
            previous = self._grants.get((bus, address))
            self._grants[(bus, address)] = "rw" if "rw" in (mode, previous) else "r"
        self._open_bus = open_bus

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._grants

    def granted(self) -> dict[tuple[int, int], str]:
        """A copy of the (bus, address) -> mode table."""
        return dict(self._grants)

    def device(self, bus: int, address: int, mode: str | None = None) -> I2CDevice:
        """A handle for a granted address (in the granted mode unless `mode` asks for less)."""
        if mode is not None and mode not in MODES:
            raise HalConfigError(f"mode must be 'r' or 'rw', got {mode!r}")
        granted = self._grants.get((bus, address))
        if granted is None:
            raise PermissionDenied(f"I2C address {_fmt(address)} on bus {bus} is not granted")
        mode = mode or granted
        if mode == "rw" and granted != "rw":
            raise PermissionDenied(f"I2C address {_fmt(address)} on bus {bus} is granted read-only")
        return I2CDevice(self._open_bus(bus), address, writable=mode == "rw", bus_number=bus)


def _fmt(address: Any) -> str:
    return f"0x{address:02x}" if isinstance(address, int) else repr(address)


def _check_address(address: Any) -> None:
    # 0x00-0x02 and 0x78-0x7f are reserved by the I2C specification
    if isinstance(address, bool) or not isinstance(address, int) or not 0x03 <= address <= 0x77:
        raise HalConfigError(f"I2C address must be a 7-bit address 0x03..0x77, got {address!r}")


def _check_register(reg: Any) -> None:
    if isinstance(reg, bool) or not isinstance(reg, int) or not 0 <= reg <= 0xFF:
        raise HalConfigError(f"register must be 0..255, got {reg!r}")


def _check_byte(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise HalConfigError(f"byte value must be 0..255, got {value!r}")


I2C_M_RD = 0x0001  # i2c_msg flag of a read message (linux/i2c.h)


class _Message:
    """smbus2.i2c_msg's shape, for an emulated bus where smbus2 is not installed."""

    def __init__(self, addr: int, flags: int, buf: bytearray) -> None:
        self.addr, self.flags, self.buf, self.len = addr, flags, buf, len(buf)

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    def __iter__(self) -> Any:
        return iter(self.buf)

    @classmethod
    def write(cls, addr: int, data: list[int] | tuple[int, ...]) -> _Message:
        return cls(addr, 0, bytearray(data))

    @classmethod
    def read(cls, addr: int, length: int) -> _Message:
        return cls(addr, I2C_M_RD, bytearray(length))


def i2c_messages() -> Any:
    """smbus2.i2c_msg (a real bus needs it), or a stand-in with the same shape (mock mode)."""
    try:
        from smbus2 import i2c_msg
    except ImportError:
        return _Message
    return i2c_msg


def root_errno(exc: BaseException) -> int | None:
    """The errno behind an exception: its own, or that of the OSError it was raised from."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        seen = seen.__cause__
    return None
