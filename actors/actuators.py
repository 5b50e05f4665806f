"""LED strip and buzzer actors: validated commands, never retried by clients."""

from __future__ import annotations

from typing import Any

from actors.base import Actor, remote
from hal.buzzer import BuzzerDevice
from hal.leds import LedStrip


class LedsActor(Actor):
    """`harvester.<node>.leds`: the node's addressable LED strip."""

    kind = "actuator"

    def __init__(self, node: str, strip: LedStrip, role: str = "spoke") -> None:
        super().__init__(node, "leds", role, tags={"device:leds"})
        self.strip = strip

    @remote
    def set_pixel(self, index: int, r: int, g: int, b: int) -> dict[str, Any]:
        """Set pixel `index` (0-based) to an RGB colour (0..255 each) and show it."""
        self.strip.set_pixel(index, r, g, b)
        return self.strip.state()

    @remote
    def set_named(self, index: int, colour: str) -> dict[str, Any]:
        """Set pixel `index` to a named colour (red, green, amber, blue, off, ...)."""
        self.strip.set_named(index, colour)
        return self.strip.state()

    @remote
    def fill(self, r: int, g: int, b: int) -> dict[str, Any]:
        """Set every pixel to one RGB colour and show it."""
        self.strip.fill(r, g, b)
        return self.strip.state()

    @remote
    def clear(self) -> dict[str, Any]:
        """Turn every pixel off."""
        self.strip.clear()
        return self.strip.state()

    @remote
    def brightness(self, value: float | None = None) -> float:
        """Get, or set (0.0..1.0), the strip's global brightness."""
        if value is not None:
            self.strip.brightness = value
        return self.strip.brightness

    @remote
    def state(self) -> dict[str, Any]:
        """Pixel count, brightness and every pixel's RGB."""
        return self.strip.state()


class BuzzerActor(Actor):
    """`harvester.<node>.buzzer`: beep patterns, on/off, mute."""

    kind = "actuator"

    def __init__(self, node: str, buzzer: BuzzerDevice, role: str = "spoke") -> None:
        super().__init__(node, "buzzer", role, tags={"device:buzzer"})
        self.buzzer = buzzer

    @remote
    def beep(self, count: int = 1, duration_ms: int = 200, tone_hz: float | None = None) -> dict[str, Any]:
        """Beep `count` times, `duration_ms` on and as long off (non-blocking).

        Returns the buzzer state plus `sounded` (False when muted) and `reason`."""
        gap = duration_ms if count > 1 else 0
        result = self.buzzer.beep(count=count, on_ms=duration_ms, off_ms=gap, tone_hz=tone_hz)
        return {**self.buzzer.state(), **result}

    @remote
    def play(self, pattern: str) -> dict[str, Any]:
        """Play a named pattern (alert, warning, critical, confirm); returns state plus `sounded`."""
        result = self.buzzer.play(pattern)
        return {**self.buzzer.state(), **result}

    @remote
    def on(self) -> dict[str, Any]:
        """Sound continuously until off() or silence(); returns state plus `sounded`."""
        result = self.buzzer.on()
        return {**self.buzzer.state(), **result}

    @remote
    def off(self) -> dict[str, Any]:
        """Stop sounding."""
        self.buzzer.off()
        return self.buzzer.state()

    @remote
    def silence(self) -> dict[str, Any]:
        """Stop any running pattern now."""
        self.buzzer.silence()
        return self.buzzer.state()

    @remote
    def mute(self, muted: bool = True) -> dict[str, Any]:
        """Mute (quiet hours, acknowledged alert) or unmute; muted beeps are dropped and counted."""
        self.buzzer.muted = bool(muted)
        return self.buzzer.state()

    @remote
    def state(self) -> dict[str, Any]:
        """Whether it sounds, whether it is muted, the running pattern and beep count."""
        return self.buzzer.state()
