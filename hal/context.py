"""Choosing mock or real hardware, and handing devices their lowest-layer ports."""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hal.errors import HalConfigError

MODES = ("mock", "real")
ENV_VAR = "HARVESTER_HAL"
# What the emulated devices of a running node remember, for a look from the REPL: tests
# build their own devices with longer records. Filling the longer ones took a mock-mode
# node about 2 MB and 40 minutes, which the soak showed as growth.
NODE_BUS_RECORD = 256  # I2C transactions (one BME680 read is about 20)
NODE_DEVICE_HISTORY = 32  # measurements per emulated chip or DHT22, frames of the mock LED strip
NODE_PIN_HISTORY = 256  # state changes per mock GPIO pin (a beep is two, a tone four)


def _recent_states_pin() -> type:
    """gpiozero's MockPWMPin keeping its last NODE_PIN_HISTORY state changes.

    gpiozero's keeps every one, for tests to assert on: the buzzer of a mock-mode node that
    sounds an alert now and then grew its list for as long as the node ran."""
    from gpiozero.pins.mock import MockPWMPin

    class RecentStatesPin(MockPWMPin):
        def _change_state(self, value: Any) -> bool:
            changed = super()._change_state(value)
            if len(self.states) >= 2 * NODE_PIN_HISTORY:  # trimmed in chunks: a list drops its head in O(n)
                del self.states[:-NODE_PIN_HISTORY]
            return changed

    return RecentStatesPin


def resolve_mode(explicit: str | None = None, configured: str | None = None) -> str:
    """Pick the HAL mode: explicit argument, then $HARVESTER_HAL, then the node config, then mock."""
    for origin, value in (("argument", explicit), (ENV_VAR, os.environ.get(ENV_VAR)), ("config", configured)):
        if value:
            if value not in MODES:
                raise HalConfigError(f"HAL mode from {origin} must be one of {MODES}, got {value!r}")
            return value
    return "mock"


@dataclass(frozen=True)
class EmulatedI2CDevice:
    """A chip to place on the emulated bus in mock mode."""

    bus: int
    address: int
    chip: str  # "bme680" | "bme688" | a sensor kind with an emulated I2C chip (sht4x, scd4x, bh1750, ads1115)


@dataclass
class MockSettings:
    """How mock mode emulates the board: chips on the bus, the room, injected faults."""

    i2c_devices: list[EmulatedI2CDevice] = field(
        default_factory=lambda: [EmulatedI2CDevice(1, 0x77, "bme680")]
    )
    room_seed: int = 1
    bus_error_rate: float = 0.0


class HalContext:
    """Everything a device needs to reach hardware, for one node, in one mode."""

    def __init__(self, mode: str, node: str, state_dir: Path | str,
                 clock: Callable[[], float] = time.time,
                 mock: MockSettings | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if mode not in MODES:
            raise HalConfigError(f"HAL mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.node = node
        self.state_dir = Path(state_dir)
        self.clock = clock
        # Drivers wait with this (a conversion time, a warm-up): a test gives a clock and a sleep
        # that advances it, so a driver built through the sensor table never sleeps for real.
        self.sleep = sleep
        self.mock = mock or MockSettings()
        # Re-entrant: sysfs() and i2c_bus() build the room under the same lock.
        self._lock = threading.RLock()
        self._buses: dict[int, Any] = {}
        self._sysfs: Any = None
        self._pin_factory: Any = None
        self._room: Any = None
        self._kernel_clock: Any = None

    @property
    def room(self) -> Any:
        """The simulated room every emulated device measures (mock mode only)."""
        with self._lock:
            if self._room is None:
                from hal.emulated.environment import RoomSimulator

                self._room = RoomSimulator(seed=self.mock.room_seed)
            return self._room

    def i2c_bus(self, number: int) -> Any:
        """The (retrying) SMBus-compatible bus number N, shared by every device on it."""
        with self._lock:
            bus = self._buses.get(number)
        if bus is not None:
            return bus
        from hal.i2c import RetryingBus

        if self.mode == "real":
            from hal.i2c import open_bus

            raw = open_bus(number)
        else:
            raw = self._emulated_bus(number)
        bus = RetryingBus(raw)
        with self._lock:
            bus = self._buses.setdefault(number, bus)
        if self.mode == "mock":
            self._place_listed(number)
        return bus

    def _place_listed(self, number: int) -> None:
        """[mock] i2c chips of the other kinds on bus N (a plugin's I2C grant may read them): each
        placed as its sensor kind places it, with that kind's defaults at the listed address."""
        from hal.sensor import SENSOR_KINDS

        for dev in self.mock.i2c_devices:
            kind = SENSOR_KINDS.get(dev.chip)
            if dev.bus == number and kind is not None and kind.emulation:
                module, _, function = kind.emulation.partition(":")
                params = kind.with_defaults({"bus": dev.bus, "address": dev.address})
                getattr(importlib.import_module(module), function)(self, params)

    def _emulated_bus(self, number: int) -> Any:
        from hal.emulated.bme680_chip import EmulatedBme680
        from hal.emulated.bus import EmulatedBus

        bus = EmulatedBus(error_rate=self.mock.bus_error_rate, seed=self.mock.room_seed,
                          record_limit=NODE_BUS_RECORD)
        for dev in self.mock.i2c_devices:
            if dev.bus == number and dev.chip in ("bme680", "bme688"):
                variant = 1 if dev.chip == "bme688" else 0
                bus.attach(dev.address, EmulatedBme680(self.room, variant=variant, clock=self.clock,
                                                         history=NODE_DEVICE_HISTORY))
        return bus

    def emulate_i2c(self, number: int, address: int, make: Callable[[HalContext], Any]) -> None:
        """Mock mode: put make(self)'s chip at an address of emulated bus N unless one answers there.

        A chip listed in [mock] i2c, or placed by an earlier sensor, stays: two sensors may share one."""
        if self.mode != "mock":
            raise HalConfigError("emulated devices exist only in mock mode")
        raw = self.i2c_bus(number).bus
        with self._lock:
            if not raw.answers(address):
                raw.attach(address, make(self))

    def sysfs(self) -> Any:
        """The sysfs/procfs root: the real one, or an emulated tree that measures the room."""
        with self._lock:
            if self._sysfs is None:
                if self.mode == "real":
                    from hal.sysfs import SysfsRoot

                    self._sysfs = SysfsRoot("/")
                else:
                    from hal.emulated.sysfs import EmulatedSysfs

                    self._sysfs = EmulatedSysfs(self.room, clock=self.clock, history=NODE_DEVICE_HISTORY)
            return self._sysfs

    def pin_factory(self) -> Any:
        """gpiozero's pin factory: its default real one, or its own MockFactory in mock mode."""
        with self._lock:
            if self._pin_factory is None:
                if self.mode == "real":
                    from gpiozero import Device

                    self._pin_factory = Device._default_pin_factory()
                else:
                    from gpiozero.pins.mock import MockFactory

                    self._pin_factory = MockFactory(pin_class=_recent_states_pin())
            return self._pin_factory

    def kernel_clock(self) -> Any:
        """Whether the wall clock is set: hal.timesync.KernelClock (adjtimex), or in mock mode an
        EmulatedKernelClock, synchronised until a test or the room actor flips it."""
        with self._lock:
            if self._kernel_clock is None:
                from hal.timesync import EmulatedKernelClock, KernelClock

                self._kernel_clock = KernelClock() if self.mode == "real" else EmulatedKernelClock()
            return self._kernel_clock

    def pixel_backend(self, count: int, gpio: int, brightness: float) -> Any:
        """The pixel backend for an LED strip: rpi_ws281x, or an in-memory recorder."""
        if self.mode == "real":
            from hal.leds import WS281X_GPIO_CHANNEL, Ws281xPixels

            # GPIO 13/19 sit on PWM channel 1; an unsupported pin is reported by Ws281xPixels.
            return Ws281xPixels(count=count, gpio=gpio, brightness=brightness,
                                channel=WS281X_GPIO_CHANNEL.get(gpio, 0))
        from hal.leds import MemoryPixels

        return MemoryPixels(count=count, brightness=brightness, clock=self.clock, max_frames=NODE_DEVICE_HISTORY)

    def close(self) -> None:
        """Close buses and pin factory."""
        with self._lock:
            for bus in self._buses.values():
                close = getattr(bus, "close", None)
                if close:
                    close()
            self._buses.clear()
            if self._pin_factory is not None:
                self._pin_factory.close()
                self._pin_factory = None
