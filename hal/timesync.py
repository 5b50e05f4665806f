"""Is this board's wall clock set? The kernel's NTP state, read with adjtimex(2).

A Raspberry Pi has no real-time clock: it boots at 1970, or at the time fake-hwclock saved at
the last shutdown, and keeps that wrong time until NTP (systemd-timesyncd, chrony) syncs and
steps it. The kernel knows: adjtimex() with modes = 0 changes nothing and returns the clock
state, TIME_ERROR (5) while the clock is unsynchronised, and the status word carries
STA_UNSYNC until a time daemon clears it.

The kernel also sets STA_UNSYNC on a clock that *was* set, once its error bound grows past
16 s without word from NTP (about 9 hours of lost network): such a clock drifts by parts per
million, it does not jump. So a status carries the boot it belongs to, and a caller that saw
the clock synchronised in this boot can tell "not set yet" from "lost its time server".

`KernelClock` reads the real kernel through ctypes; `EmulatedKernelClock` (mock mode) answers
what a test or the REPL set. Both take no time worth measuring, so callers ask on every poll.
`ClockMark` records how the wall clock stood against the monotonic clock when a reading was
stamped, so that a stamp taken before the clock was set can be corrected by the step the
clock made when it synced (the monotonic clock never steps)."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

TIME_OK, TIME_ERROR = 0, 5
STA_UNSYNC = 0x0040
# Clock states adjtimex() returns (man 2 adjtimex)
STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
# No wall clock that was ever set reads earlier: the hub refuses readings stamped before it,
# and a stamp before it can only come from a board whose clock is not set.
CLOCK_SET_AFTER = 1577836800.0  # 2020-01-01T00:00:00Z
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> as the `adjtimex` symbol takes it (longs of the platform;
    the kernel writes the whole struct, padding included)."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11)]


class Adjtimex(NamedTuple):
    """What adjtimex(modes=0) answered: its return value and the fields that tell the clock's state."""

    state: int
    status: int
    maxerror_us: int
    esterror_us: int


Reader = Callable[[], Adjtimex]


def _adjtimex() -> Any:
    """libc's adjtimex, looked up once (a spoke asks on every poll)."""
    global _ADJTIMEX
    if _ADJTIMEX is None:
        try:
            _ADJTIMEX = ctypes.CDLL(None, use_errno=True).adjtimex
        except (AttributeError, OSError) as exc:  # not Linux (macOS names it ntp_adjtime, another struct)
            raise OSError(f"no adjtimex() in this C library: {exc}") from None
    return _ADJTIMEX


_ADJTIMEX: Any = None


def read_adjtimex() -> Adjtimex:
    """Ask the kernel (modes = 0: read only, no privilege needed); OSError where there is no adjtimex."""
    fn = _adjtimex()
    tx = Timex()
    tx.modes = 0
    state = fn(ctypes.byref(tx))
    if state < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex() failed: errno {err}")
    return Adjtimex(state, tx.status, tx.maxerror, tx.esterror)


@dataclass(frozen=True)
class ClockStatus:
    """The clock's state: synced True/False, or None when it cannot be told (no adjtimex)."""

    synced: bool | None
    detail: str
    state: int | None = None
    status: int | None = None
    maxerror_us: int | None = None
    boot: str = ""  # the boot this state is of (the clock is set again, or not, at every boot)

    def to_dict(self) -> dict[str, Any]:
        """For the agent's info(): plain JSON."""
        return {"synced": self.synced, "detail": self.detail, "state": self.state, "status": self.status,
                "maxerror_us": self.maxerror_us}


def parse(answer: Adjtimex, boot: str = "") -> ClockStatus:
    """Unsynchronised when adjtimex() returned TIME_ERROR or the status has STA_UNSYNC."""
    unsync = answer.state == TIME_ERROR or bool(answer.status & STA_UNSYNC)
    state = STATES.get(answer.state, f"state {answer.state}")
    flags = "STA_UNSYNC set" if answer.status & STA_UNSYNC else "STA_UNSYNC clear"
    bound = f"max error {answer.maxerror_us / 1e6:g} s"
    if unsync:
        detail = f"clock not synchronised (adjtimex: {state}, {flags}, {bound})"
    else:
        detail = f"clock synchronised (adjtimex: {state}, {bound})"
    return ClockStatus(not unsync, detail, answer.state, answer.status, answer.maxerror_us, boot)


def not_asked() -> ClockStatus:
    """The status of a clock nobody asked (a role built without a HAL, in tests): unknown."""
    return ClockStatus(None, "clock state not asked")


class KernelClock:
    """The kernel's clock state; `reader` is adjtimex() itself unless a test gives another."""

    def __init__(self, reader: Reader = read_adjtimex) -> None:
        self._reader = reader

    def boot(self) -> str:
        """The boot the clock's state belongs to."""
        return boot_id()

    def status(self) -> ClockStatus:
        """The state now. A kernel that cannot be asked is unknown (None), not unsynchronised:
        holding every reading on a machine that has no adjtimex would keep them from the hub forever."""
        try:
            return parse(self._reader(), self.boot())
        except OSError as exc:
            return ClockStatus(None, f"clock state unknown: {exc}", boot=self.boot())


class EmulatedKernelClock(KernelClock):
    """Mock mode's kernel clock: synchronised until a test or the REPL says otherwise.

    Going unsynchronised emulates a board that booted without a real-time clock: a new boot,
    whose clock NTP has not set yet (the host's monotonic clock, which ClockMark reads, goes on)."""

    def __init__(self, synced: bool = True) -> None:
        self._lock = threading.Lock()
        self._synced = synced
        self._boots = 0
        super().__init__(self._answer)

    def set_synced(self, synced: bool) -> None:
        """Flip the emulated NTP state (the wall clock itself is the host's and does not step)."""
        with self._lock:
            if self._synced and not synced:
                self._boots += 1
            self._synced = bool(synced)

    def boot(self) -> str:
        """The emulated boot: a new one each time the clock goes unsynchronised."""
        with self._lock:
            return f"emulated-{self._boots}"

    def _answer(self) -> Adjtimex:
        with self._lock:
            synced = self._synced
        if synced:
            return Adjtimex(TIME_OK, 0x0001, 50_000, 1_000)  # STA_PLL, as under timesyncd
        return Adjtimex(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000)


def boot_id() -> str:
    """This boot's id (the monotonic clock counts from the boot); a per-process one where there is none."""
    global _BOOT
    if _BOOT is None:
        try:
            _BOOT = BOOT_ID.read_text(encoding="ascii").strip() or None
        except OSError:
            _BOOT = None
        _BOOT = _BOOT or f"process-{os.getpid()}-{os.urandom(8).hex()}"
    return _BOOT


_BOOT: str | None = None


class ClockMark(NamedTuple):
    """How the wall clock stood against the monotonic clock, in which boot."""

    boot: str
    offset: float  # wall - monotonic, seconds


def clock_mark(wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> ClockMark:
    """The mark now. The step the wall clock made between two marks of one boot is the
    difference of their offsets."""
    return ClockMark(boot_id(), wall() - mono())


def date_text(ts: float) -> str:
    """An epoch time as a UTC date for a message (`1970-01-02`), or `before 1970` where it has none."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "before 1970" if ts < 0 else "far in the future"
