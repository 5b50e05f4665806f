"""LED strip and buzzer actors: validated commands, never retried by clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, TypeVar

from actors.base import Actor, Bool, Int, Number, Str, remote
from actors.devices.supervise import DeviceSlot
from actors.errors import ActorUnavailable
from hal.buzzer import MAX_COUNT, MAX_MS, MIN_MS, PATTERNS, BuzzerDevice
from hal.errors import ActuatorArgumentError
from hal.leds import LedStrip
from hal.names import object_name

D = TypeVar("D")
# The longest strip a node config allows is 1024 pixels; the strip refuses indexes past its own length.
PIXEL = Int(0, 1023)
CHANNEL = Int(0, 255)


class DeviceActor(Actor, Generic[D]):
    """An actor over one supervised device: calls get ActorUnavailable while it is down."""

    kind = "actuator"
    argument_error: ClassVar[type[Exception]] = ActuatorArgumentError

    def __init__(self, node: str, name: str, build: Callable[[], D], role: str = "spoke") -> None:
        super().__init__(node, name, role, tags={f"device:{name}"})
        self.slot: DeviceSlot[D] = DeviceSlot(object_name(node, name), build)

    @contextmanager
    def device(self) -> Iterator[D]:
        """The device for one command; a hardware failure marks it down and is rebuilt later."""
        dev = self.slot.get()
        if dev is None:
            self.note_error(self.slot.last_error)
            raise ActorUnavailable(f"{self.object_name} is unavailable: {self.slot.last_error}")
        try:
            yield dev
        except ActuatorArgumentError:
            raise  # the caller's mistake, not the device's
        except OSError as exc:
            self.slot.failed(exc)
            self.note_error(self.slot.last_error)
            raise ActorUnavailable(f"{self.object_name} failed: {exc}") from None
        self.note_error(None)

    def close(self) -> None:
        """Release the device."""
        self.slot.close()


class LedsActor(DeviceActor[LedStrip]):
    """`harvester.<node>.leds`: the node's addressable LED strip."""

    def __init__(self, node: str, build: Callable[[], LedStrip], role: str = "spoke") -> None:
        super().__init__(node, "leds", build, role)

    @remote(index=PIXEL, r=CHANNEL, g=CHANNEL, b=CHANNEL)
    def set_pixel(self, index: int, r: int, g: int, b: int) -> dict[str, Any]:
        """Set pixel `index` (0-based) to an RGB colour (0..255 each) and show it."""
        with self.device() as strip:
            strip.set_pixel(index, r, g, b)
            return strip.state()

    @remote(index=PIXEL, colour=Str(32))
    def set_named(self, index: int, colour: str) -> dict[str, Any]:
        """Set pixel `index` to a named colour (red, green, amber, blue, off, ...)."""
        with self.device() as strip:
            strip.set_named(index, colour)
            return strip.state()

    @remote(r=CHANNEL, g=CHANNEL, b=CHANNEL)
    def fill(self, r: int, g: int, b: int) -> dict[str, Any]:
        """Set every pixel to one RGB colour and show it."""
        with self.device() as strip:
            strip.fill(r, g, b)
            return strip.state()

    @remote
    def clear(self) -> dict[str, Any]:
        """Turn every pixel off."""
        with self.device() as strip:
            strip.clear()
            return strip.state()

    @remote(value=Number(0.0, 1.0, optional=True))
    def brightness(self, value: float | None = None) -> float:
        """Get, or set (0.0..1.0), the strip's global brightness."""
        with self.device() as strip:
            if value is not None:
                strip.brightness = value
            return strip.brightness

    @remote
    def state(self) -> dict[str, Any]:
        """Pixel count, brightness and every pixel's RGB."""
        with self.device() as strip:
            return strip.state()


class BuzzerActor(DeviceActor[BuzzerDevice]):
    """`harvester.<node>.buzzer`: beep patterns, on/off, mute."""

    def __init__(self, node: str, build: Callable[[], BuzzerDevice], role: str = "spoke") -> None:
        super().__init__(node, "buzzer", build, role)

    @remote(count=Int(1, MAX_COUNT), duration_ms=Int(MIN_MS, MAX_MS), tone_hz=Number(optional=True))
    def beep(self, count: int = 1, duration_ms: int = 200, tone_hz: float | None = None) -> dict[str, Any]:
        """Beep `count` times, `duration_ms` on and as long off (non-blocking).

        Returns the buzzer state plus `sounded` (False when muted) and `reason`."""
        with self.device() as buzzer:
            gap = duration_ms if count > 1 else 0
            result = buzzer.beep(count=count, on_ms=duration_ms, off_ms=gap, tone_hz=tone_hz)
            return {**buzzer.state(), **result}

    @remote(pattern=Str(choices=tuple(PATTERNS)))
    def play(self, pattern: str) -> dict[str, Any]:
        """Play a named pattern (alert, warning, critical, confirm); returns state plus `sounded`."""
        with self.device() as buzzer:
            result = buzzer.play(pattern)
            # The state after the command: the hub caches this answer for the dashboard.
            return {**buzzer.state(), **result}

    @remote
    def on(self) -> dict[str, Any]:
        """Sound continuously until off() or silence(); returns state plus `sounded`."""
        with self.device() as buzzer:
            result = buzzer.on()
            return {**buzzer.state(), **result}

    @remote
    def off(self) -> dict[str, Any]:
        """Stop sounding."""
        with self.device() as buzzer:
            buzzer.off()
            return buzzer.state()

    @remote
    def silence(self) -> dict[str, Any]:
        """Stop any running pattern now."""
        with self.device() as buzzer:
            buzzer.silence()
            return buzzer.state()

    @remote(muted=Bool())
    def mute(self, muted: bool = True) -> dict[str, Any]:
        """Mute (quiet hours, acknowledged alert) or unmute; muted beeps are dropped and counted."""
        with self.device() as buzzer:
            buzzer.muted = muted
            return buzzer.state()

    @remote
    def state(self) -> dict[str, Any]:
        """Whether it sounds, whether it is muted, the running pattern and beep count."""
        with self.device() as buzzer:
            return buzzer.state()
