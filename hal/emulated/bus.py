"""An in-memory SMBus with register-level chips, fault injection and a transaction record.

Command-level chips (CommandChip: Sensirion's, the BH1750) are reached through i2c_rdwr only,
as their real drivers do; their transactions are recorded with register -1.

It has smbus2's five transfer methods, so real drivers run on it unchanged. Faults are the
ones two Pis sharing one bus produce: NACKs (EREMOTEIO), EIO and ETIMEDOUT at `error_rate`
per transaction, single flipped bits in block reads at `bitflip_rate`, and, through
`SecondMaster`, another board that resets the chip or rewrites its registers.
"""

from __future__ import annotations

import ctypes
import errno
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

TRANSIENT_ERRNOS = (errno.EREMOTEIO, errno.EIO, errno.ETIMEDOUT)
I2C_M_RD = 0x0001  # i2c_msg flag of a read message (linux/i2c.h)


class EmulatedChip(Protocol):
    """What the bus needs from a chip model."""

    def read(self, reg: int, n: int) -> list[int]:
        """Return n bytes starting at register `reg`."""
        ...

    def write(self, reg: int, data: list[int]) -> None:
        """Receive the bytes that followed the register address in one write."""
        ...


class CommandChip(Protocol):
    """A chip spoken to by commands rather than registers (Sensirion, BH1750): a write is a
    command with its arguments, a read returns what the last command left to read. Such a chip
    may raise OSError(EREMOTEIO) from read_raw, as a real one NACKs a read it has nothing for."""

    def command(self, data: list[int]) -> None:
        """Receive every byte of one write message."""
        ...

    def read_raw(self, n: int) -> list[int]:
        """Return n bytes for one read message."""
        ...


@dataclass(frozen=True, slots=True)
class Transaction:
    """One transfer as the bus saw it."""

    number: int
    master: str  # "us" or the name of a SecondMaster
    kind: str  # "read" | "write" | "rdwr" (a combined transfer that failed as a whole)
    address: int
    register: int
    data: tuple[int, ...]  # bytes written, or bytes returned (after any bit flip)
    error: int | None = None  # errno raised, if any
    applied: bool = True  # False when a write was lost to the error
    flipped: bool = False  # a bit was flipped on the way


class EmulatedBus:
    """SMBus-compatible in-memory bus; `attach(address, chip)` puts a chip model on it."""

    def __init__(self, error_rate: float = 0.0, seed: int = 1, bitflip_rate: float = 0.0,
                 record_limit: int = 10_000) -> None:
        for label, rate in (("error_rate", error_rate), ("bitflip_rate", bitflip_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be within 0..1, got {rate!r}")
        self.error_rate = error_rate
        self.bitflip_rate = bitflip_rate
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._chips: dict[int, EmulatedChip] = {}
        self._hooks: list[Callable[[int], None]] = []
        self.transactions = 0
        self.errors = 0
        self.bitflips = 0
        # bounded so a long mock-mode run does not grow without end
        self.record: deque[Transaction] = deque(maxlen=record_limit)
        self.closed = False

    # -- set-up ------------------------------------------------------------------------

    def attach(self, address: int, chip: EmulatedChip) -> None:
        """Answer at a 7-bit address with this chip."""
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"7-bit I2C address must be 0x03..0x77, got {address!r}")
        with self._lock:
            self._chips[address] = chip

    def answers(self, address: int) -> bool:
        """True when a chip is attached at the address."""
        with self._lock:
            return address in self._chips

    def chip(self, address: int) -> EmulatedChip:
        """The chip model at an address."""
        return self._chips[address]

    def add_hook(self, hook: Callable[[int], None]) -> None:
        """Call hook(transaction_number) before each of our transactions, under the bus lock."""
        with self._lock:
            self._hooks.append(hook)

    def foreign_write(self, master: str, address: int, reg: int, data: list[int]) -> None:
        """A write by another master: no fault injection, not counted in `transactions`."""
        with self._lock:
            self._chips[address].write(reg, list(data))
            self.record.append(Transaction(self.transactions, master, "write", address, reg, tuple(data)))

    # -- smbus2's methods --------------------------------------------------------------

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """Read one register."""
        return self._read(i2c_addr, register, 1, block=False)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        """Write one register."""
        self._write(i2c_addr, register, [value])

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        """Read `length` (<= 32) bytes starting at a register."""
        if not 1 <= length <= 32:
            raise ValueError(f"I2C block length must be 1..32, got {length}")
        return self._read(i2c_addr, register, length, block=True)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Iterable[int],
                             force: bool | None = None) -> None:
        """Write up to 32 bytes after the register address (the chip decides what they mean)."""
        values = list(data)
        if not 1 <= len(values) <= 32:
            raise ValueError(f"I2C block length must be 1..32, got {len(values)}")
        self._write(i2c_addr, register, values)

    def i2c_rdwr(self, *msgs: Any) -> None:
        """Combined transfer: a write of [register, data...] then reads, like smbus2.i2c_msg."""
        with self._lock:
            self._begin()
            pointer = 0
            err = self._inject()
            if err is not None:
                addr = msgs[0].addr if msgs else 0
                self._log("rdwr", addr, pointer, [], error=err, applied=False)
                raise OSError(err, f"injected {errno.errorcode[err]} in a combined transfer to 0x{addr:02x}")
            for msg in msgs:
                chip = self._chip_or_nack(msg.addr, pointer, "rdwr")
                if hasattr(chip, "command"):
                    self._command_message(chip, msg)
                elif msg.flags & I2C_M_RD:
                    data = self._maybe_flip(chip.read(pointer, msg.len), block=msg.len > 1)
                    _fill(msg, data)
                    self._log("read", msg.addr, pointer, data)
                else:
                    payload = list(bytes(msg))
                    if not payload:
                        continue
                    pointer = payload[0]
                    if len(payload) > 1:
                        chip.write(pointer, payload[1:])
                    self._log("write", msg.addr, pointer, payload[1:])

    def _command_message(self, chip: Any, msg: Any) -> None:
        if msg.flags & I2C_M_RD:
            try:
                raw = chip.read_raw(msg.len)
            except OSError as exc:
                self._log("read", msg.addr, -1, [], error=exc.errno, applied=False)
                raise
            data = self._maybe_flip(raw, block=msg.len > 1)
            _fill(msg, data)
            self._log("read", msg.addr, -1, data, flipped=data != raw)
        else:
            payload = list(bytes(msg))
            try:
                chip.command(payload)
            except OSError as exc:  # the chip NACKed the command: recorded like a refused read
                self._log("write", msg.addr, -1, payload, error=exc.errno, applied=False)
                raise
            self._log("write", msg.addr, -1, payload)

    def close(self) -> None:
        """Mark the bus closed; further transfers raise OSError(EBADF) like a closed fd."""
        with self._lock:
            self.closed = True

    # -- internals ---------------------------------------------------------------------

    def _begin(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "I2C bus is closed")
        self.transactions += 1
        for hook in self._hooks:
            hook(self.transactions)

    def _chip_or_nack(self, address: int, register: int, kind: str) -> EmulatedChip:
        chip = self._chips.get(address)
        if chip is None:
            self._log(kind, address, register, [], error=errno.EREMOTEIO, applied=False)
            raise OSError(errno.EREMOTEIO, f"no ACK from 0x{address:02x} (nothing at that address)")
        return chip

    def _inject(self) -> int | None:
        if self.error_rate and self._rng.random() < self.error_rate:
            self.errors += 1
            return self._rng.choice(TRANSIENT_ERRNOS)
        return None

    def _read(self, address: int, register: int, n: int, block: bool) -> list[int]:
        with self._lock:
            self._begin()
            chip = self._chip_or_nack(address, register, "read")
            err = self._inject()
            if err is not None:
                self._log("read", address, register, [], error=err, applied=False)
                raise OSError(err, f"injected {errno.errorcode[err]} reading 0x{address:02x}")
            raw = chip.read(register, n)
            data = self._maybe_flip(raw, block)
            self._log("read", address, register, data, flipped=data != raw)
            return data

    def _write(self, address: int, register: int, data: list[int]) -> None:
        for v in data:
            if not 0 <= v <= 0xFF:
                raise ValueError(f"byte out of range: {v!r}")
        with self._lock:
            self._begin()
            chip = self._chip_or_nack(address, register, "write")
            err = self._inject()
            # A transfer can fail after the chip took the data (a lost ACK), or before.
            applied = err is None or self._rng.random() < 0.5
            if applied:
                chip.write(register, list(data))
            self._log("write", address, register, data, error=err, applied=applied)
            if err is not None:
                raise OSError(err, f"injected {errno.errorcode[err]} writing 0x{address:02x}")

    def _maybe_flip(self, data: list[int], block: bool) -> list[int]:
        if block and self.bitflip_rate and self._rng.random() < self.bitflip_rate:
            self.bitflips += 1
            data = list(data)
            i = self._rng.randrange(len(data))
            data[i] ^= 1 << self._rng.randrange(8)
        return data

    def _log(self, kind: str, address: int, register: int, data: list[int], error: int | None = None,
             applied: bool = True, flipped: bool = False) -> None:
        self.record.append(Transaction(self.transactions, "us", kind, address, register, tuple(data),
                                       error, applied, flipped))


def _fill(msg: Any, data: list[int]) -> None:
    """Copy read bytes into an i2c_msg's buffer (ctypes, as smbus2 makes it, or a bytearray)."""
    if isinstance(msg.buf, (bytearray, list)):
        msg.buf[: len(data)] = data
    else:
        ctypes.memmove(msg.buf, bytes(data), len(data))


class SecondMaster:
    """Another board on the same bus: every ~`every` of our transactions it disturbs a chip.

    Actions: "reset" writes the soft-reset command; "reconfigure" writes its own control
    and heater settings (what a second driver instance would do). Each event is recorded
    in `events` as (transaction number, action).
    """

    # What the other board's driver writes: its own oversampling, heater and filter; the
    # second set skips humidity (osrs_h = 0), so a careless reader gets 0x8000.
    CONFIGS = (
        ((0x72, 0x01), (0x74, 0x24), (0x71, 0x00), (0x5A, 0x40), (0x64, 0x59), (0x75, 0x08)),
        ((0x72, 0x00), (0x74, 0x48), (0x71, 0x10), (0x5A, 0x73), (0x64, 0x65), (0x75, 0x00)),
    )

    def __init__(self, bus: EmulatedBus, address: int, every: int = 100,
                 actions: tuple[str, ...] = ("reset", "reconfigure"), seed: int = 2,
                 jitter: float = 0.2, name: str = "second-master") -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        unknown = set(actions) - {"reset", "reconfigure"}
        if unknown or not actions:
            raise ValueError(f"actions must be a non-empty subset of reset/reconfigure, got {actions}")
        self.bus = bus
        self.address = address
        self.every = every
        self.actions = actions
        self.jitter = jitter
        self.name = name
        self._rng = random.Random(seed)
        self.events: list[tuple[int, str]] = []
        self._next = self._gap()
        bus.add_hook(self._on_transaction)

    def _gap(self) -> int:
        spread = int(self.every * self.jitter)
        return max(1, self.every + self._rng.randint(-spread, spread))

    def _on_transaction(self, number: int) -> None:
        self._next -= 1
        if self._next > 0:
            return
        self._next = self._gap()
        action = self._rng.choice(self.actions)
        if action == "reset":
            self.bus.foreign_write(self.name, self.address, 0xE0, [0xB6])
        else:
            for reg, value in self._rng.choice(self.CONFIGS):
                self.bus.foreign_write(self.name, self.address, reg, [value])
        self.events.append((number, action))
