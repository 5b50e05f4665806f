"""The I2C layer: opening buses, per-transaction retries with backoff, per-address grants."""

from __future__ import annotations

import errno
import sys

import pytest
from smbus2 import i2c_msg

from hal.emulated.bus import EmulatedBus
from hal.errors import BusError, DeviceUnavailable, HalConfigError, PermissionDenied
from hal.i2c import I2CDevice, I2CGrants, RetryingBus, open_bus


class RegisterFile:
    """A trivial chip: 256 registers, auto-increment both ways."""

    def __init__(self) -> None:
        self.regs = list(range(256))

    def read(self, reg: int, n: int) -> list[int]:
        return [self.regs[(reg + i) & 0xFF] for i in range(n)]

    def write(self, reg: int, data: list[int]) -> None:
        for i, v in enumerate(data):
            self.regs[(reg + i) & 0xFF] = v


class FlakyBus:
    """Fails the first `failures` calls with `err`, then answers; counts calls."""

    def __init__(self, failures: int, err: int = errno.EREMOTEIO) -> None:
        self.failures = failures
        self.err = err
        self.calls: list[tuple] = []
        self.closed = False

    def read_byte_data(self, addr: int, reg: int) -> int:
        self.calls.append(("read_byte_data", addr, reg))
        if len(self.calls) <= self.failures:
            raise OSError(self.err, "flaky")
        return 0x61

    def close(self) -> None:
        self.closed = True


# -- open_bus ---------------------------------------------------------------------------

def test_open_missing_bus_says_how_to_enable_i2c() -> None:
    with pytest.raises(DeviceUnavailable, match="raspi-config"):
        open_bus(250)


def test_open_bus_without_smbus2_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smbus2", None)  # makes `import smbus2` fail
    with pytest.raises(DeviceUnavailable, match="smbus2 is not installed"):
        open_bus(1)


# -- RetryingBus (e): retries and backoff with a fake clock -----------------------------

def test_retry_then_success_with_exponential_backoff() -> None:
    slept: list[float] = []
    raw = FlakyBus(failures=3)
    bus = RetryingBus(raw, retries=5, backoff=0.002, sleep=slept.append)
    assert bus.read_byte_data(0x77, 0xD0) == 0x61
    assert slept == pytest.approx([0.002, 0.004, 0.008])
    assert len(raw.calls) == 4
    assert bus.stats == {"transactions": 1, "retries": 3, "failures": 0}


@pytest.mark.parametrize("err", [errno.EREMOTEIO, errno.EIO, errno.ETIMEDOUT])
def test_gives_up_after_retries_with_bus_error_keeping_errno(err: int) -> None:
    slept: list[float] = []
    raw = FlakyBus(failures=100, err=err)
    bus = RetryingBus(raw, retries=5, backoff=0.001, sleep=slept.append)
    with pytest.raises(BusError, match=f"errno {err}") as info:
        bus.read_byte_data(0x77, 0xD0)
    assert isinstance(info.value, DeviceUnavailable) and isinstance(info.value, OSError)
    assert info.value.__cause__.errno == err
    assert len(raw.calls) == 6 and len(slept) == 5
    assert slept == pytest.approx([0.001 * 2**k for k in range(5)])
    assert bus.stats == {"transactions": 1, "retries": 5, "failures": 1}


def test_other_errors_pass_through_untouched() -> None:
    slept: list[float] = []
    raw = FlakyBus(failures=1, err=errno.EBADF)
    bus = RetryingBus(raw, sleep=slept.append)
    with pytest.raises(OSError) as info:
        bus.read_byte_data(0x77, 0xD0)
    assert info.value.errno == errno.EBADF and not isinstance(info.value, BusError)
    assert slept == [] and len(raw.calls) == 1


def test_each_transaction_is_retried_on_its_own() -> None:
    """At 30 % errors every one of 500 transfers still succeeds; retries count per transfer."""
    slept: list[float] = []
    raw = EmulatedBus(error_rate=0.3, seed=5)
    chip = RegisterFile()
    raw.attach(0x50, chip)
    bus = RetryingBus(raw, sleep=slept.append)
    for i in range(250):
        bus.write_byte_data(0x50, i % 200, i % 256)
        assert bus.read_i2c_block_data(0x50, i % 200, 1) == [i % 256]
    assert bus.stats["transactions"] == 500 and bus.stats["failures"] == 0
    assert bus.stats["retries"] == raw.transactions - 500 == raw.errors
    assert len(slept) == bus.stats["retries"]


def test_all_five_methods_and_close_reach_the_bus() -> None:
    raw = EmulatedBus()
    chip = RegisterFile()
    raw.attach(0x50, chip)
    bus = RetryingBus(raw, sleep=lambda s: None)
    bus.write_byte_data(0x50, 0x10, 0xAA)
    bus.write_i2c_block_data(0x50, 0x20, [1, 2, 3])
    assert bus.read_byte_data(0x50, 0x10) == 0xAA
    assert bus.read_i2c_block_data(0x50, 0x20, 3) == [1, 2, 3]
    read = i2c_msg.read(0x50, 2)
    bus.i2c_rdwr(i2c_msg.write(0x50, [0x21]), read)
    assert list(read) == [2, 3]
    bus.close()
    assert raw.closed
    assert bus.stats["transactions"] == 5


def test_absent_chip_becomes_bus_error() -> None:
    bus = RetryingBus(EmulatedBus(), sleep=lambda s: None)
    with pytest.raises(BusError, match="0x44"):
        bus.read_byte_data(0x44, 0x00)


# -- I2CDevice and I2CGrants (d) --------------------------------------------------------

@pytest.fixture
def raw_bus() -> EmulatedBus:
    raw = EmulatedBus()
    for address in (0x76, 0x77, 0x40):
        raw.attach(address, RegisterFile())
    return raw


def grants_for(raw: EmulatedBus) -> I2CGrants:
    return I2CGrants([(1, 0x77, "rw"), (1, 0x76, "r")], open_bus=lambda n: raw)


def test_device_talks_only_to_its_address(raw_bus: EmulatedBus) -> None:
    dev = grants_for(raw_bus).device(1, 0x77)
    dev.write_byte(0x72, 0x02)
    dev.write_block(0x50, [7, 8])
    assert dev.read_byte(0x72) == 0x02 and dev.read_block(0x50, 2) == [7, 8]
    assert {tx.address for tx in raw_bus.record} == {0x77}


def test_read_only_grant_refuses_writes(raw_bus: EmulatedBus) -> None:
    dev = grants_for(raw_bus).device(1, 0x76)
    assert dev.read_byte(0xD0) == 0xD0
    with pytest.raises(PermissionDenied, match="read-only"):
        dev.write_byte(0xE0, 0xB6)
    with pytest.raises(PermissionError):  # PermissionDenied is also the built-in
        dev.write_block(0x72, [1])
    assert all(tx.kind == "read" for tx in raw_bus.record)  # nothing reached the bus


def test_ungranted_addresses_and_buses_are_refused(raw_bus: EmulatedBus) -> None:
    grants = grants_for(raw_bus)
    for bus, address in ((1, 0x40), (0, 0x77), (2, 0x76)):
        with pytest.raises(PermissionDenied, match="not granted"):
            grants.device(bus, address)
    with pytest.raises(PermissionDenied, match="read-only"):
        grants.device(1, 0x76, "rw")
    assert grants.device(1, 0x77, "r").writable is False  # asking for less is fine
    assert len(raw_bus.record) == 0


@pytest.mark.parametrize("grant", [(1, 0x80, "r"), (1, 0x02, "rw"), (-1, 0x77, "r"), (1, 0x77, "w"),
                                   (1, "0x77", "r"), (1, 0x77), "1:0x77"])
def test_bad_grants_are_config_errors(grant) -> None:
    with pytest.raises(HalConfigError):
        I2CGrants([grant], open_bus=lambda n: None)


def test_duplicate_grants_merge_to_the_wider_mode() -> None:
    grants = I2CGrants([(1, 0x77, "r"), (1, 0x77, "rw")], open_bus=lambda n: None)
    assert grants.granted() == {(1, 0x77): "rw"} and (1, 0x77) in grants


@pytest.mark.parametrize("call", [lambda d: d.read_byte(256), lambda d: d.read_block(0, 33),
                                  lambda d: d.read_block(0, 0), lambda d: d.write_byte(0, 256),
                                  lambda d: d.write_block(0, []), lambda d: d.write_block(0, [1, -1])])
def test_device_argument_checks(raw_bus: EmulatedBus, call) -> None:
    dev = I2CDevice(raw_bus, 0x77)
    with pytest.raises(HalConfigError):
        call(dev)
    assert len(raw_bus.record) == 0


def test_grant_handles_share_the_retrying_bus(raw_bus: EmulatedBus) -> None:
    retrying = RetryingBus(raw_bus, sleep=lambda s: None)
    opened: list[int] = []

    def opener(n: int) -> RetryingBus:
        opened.append(n)
        return retrying

    grants = I2CGrants([(1, 0x77, "rw"), (1, 0x76, "r")], open_bus=opener)
    grants.device(1, 0x77).read_byte(0)
    grants.device(1, 0x76).read_byte(0)
    assert opened == [1, 1] and retrying.stats["transactions"] == 2
