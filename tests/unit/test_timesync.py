"""hal.timesync: the kernel's clock state from adjtimex(2), real and emulated, and clock marks."""

from __future__ import annotations

import ctypes
import sys

import pytest

from hal.context import HalContext
from hal.timesync import (
    STA_UNSYNC,
    TIME_ERROR,
    TIME_OK,
    Adjtimex,
    ClockMark,
    EmulatedKernelClock,
    KernelClock,
    Timex,
    clock_mark,
    date_text,
    parse,
    read_adjtimex,
)

STA_PLL = 0x0001
TIME_INS = 1


def test_time_error_is_unsynchronised():
    status = parse(Adjtimex(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000))
    assert status.synced is False
    assert status.detail == ("clock not synchronised (adjtimex: TIME_ERROR, STA_UNSYNC set, max error 16 s)")


def test_the_unsync_bit_alone_is_unsynchronised():
    """A state other than TIME_ERROR (a leap second pending) with STA_UNSYNC still means unset."""
    assert parse(Adjtimex(TIME_INS, STA_UNSYNC | STA_PLL, 1_000, 10)).synced is False


def test_time_error_alone_is_unsynchronised():
    assert parse(Adjtimex(TIME_ERROR, STA_PLL, 1_000, 10)).synced is False


def test_time_ok_without_the_unsync_bit_is_synchronised():
    status = parse(Adjtimex(TIME_OK, STA_PLL, 50_000, 1_000))
    assert status.synced is True
    assert status.detail == "clock synchronised (adjtimex: TIME_OK, max error 0.05 s)"
    assert status.to_dict() == {"synced": True, "detail": status.detail, "state": TIME_OK, "status": STA_PLL,
                                "maxerror_us": 50_000}


def test_the_kernel_clock_asks_its_reader_every_time():
    answers = [Adjtimex(TIME_ERROR, STA_UNSYNC, 16_000_000, 16_000_000), Adjtimex(TIME_OK, STA_PLL, 1, 1)]
    clock = KernelClock(lambda: answers.pop(0))
    assert clock.status().synced is False
    assert clock.status().synced is True


def test_a_kernel_that_cannot_be_asked_is_unknown_not_unsynchronised():
    def no_adjtimex() -> Adjtimex:
        raise OSError("no adjtimex() in this C library")

    status = KernelClock(no_adjtimex).status()
    assert status.synced is None
    assert status.detail == "clock state unknown: no adjtimex() in this C library"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex(2) is Linux's")
def test_the_real_kernel_answers():
    """Whatever this machine's clock state is, the call works unprivileged and parses."""
    answer = read_adjtimex()
    assert 0 <= answer.state <= 5
    assert parse(answer).synced is (not (answer.state == TIME_ERROR or answer.status & STA_UNSYNC))


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_long) != 8,
                    reason="the 64-bit Linux layout")
def test_struct_timex_has_the_kernels_size():
    assert ctypes.sizeof(Timex) == 208  # sizeof(struct timex) on x86-64 and aarch64
    assert Timex.status.offset == 40


def test_the_emulated_clock_flips():
    clock = EmulatedKernelClock()
    first = clock.status()
    assert first.synced is True
    clock.set_synced(False)
    status = clock.status()
    assert status.synced is False and status.state == TIME_ERROR and status.status & STA_UNSYNC
    assert status.boot != first.boot  # unsynchronised: a board that booted without a real-time clock
    clock.set_synced(True)
    assert clock.status().synced is True and clock.status().boot == status.boot


def test_the_real_kernel_clock_names_this_boot():
    status = KernelClock(lambda: Adjtimex(TIME_OK, STA_PLL, 1, 1)).status()
    assert status.boot and status.boot == KernelClock().boot()


def test_mock_mode_gives_one_emulated_clock_and_real_mode_the_kernels(tmp_path):
    mock = HalContext("mock", "pi4", tmp_path)
    assert isinstance(mock.kernel_clock(), EmulatedKernelClock)
    assert mock.kernel_clock() is mock.kernel_clock()  # what a test flips is what the node asks
    real = HalContext("real", "pi4", tmp_path)
    assert type(real.kernel_clock()) is KernelClock


def test_a_clock_mark_is_the_wall_clock_against_the_monotonic_one():
    mark = clock_mark(wall=lambda: 86_400.0, mono=lambda: 400.0)
    assert mark.offset == 86_000.0 and mark.boot
    stepped = clock_mark(wall=lambda: 1_700_000_100.0, mono=lambda: 500.0)
    assert stepped.boot == mark.boot
    assert stepped.offset - mark.offset == 1_700_000_100.0 - 500.0 - 86_000.0  # the step NTP made
    assert isinstance(mark, ClockMark)


def test_date_text():
    assert date_text(86_400) == "1970-01-02"
    assert date_text(-5) == "1969-12-31"
    assert date_text(-(2**70)) == "before 1970"
