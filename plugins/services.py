"""What a node lends its plugins: LEDs, buzzer, I2C buses and an alert sink.

The node agent builds a `NodeServices` over its own LED strip and buzzer (its leds and
buzzer actors, called in-process, so plugins drive the same supervised devices as remote
callers), its HAL context's I2C buses, and a `remote` function that reaches another
node's actuators through that node's actors (the Pyro5 side lives in actors/, never
here). A bare hal LedStrip serves as `leds` directly; a hal BuzzerDevice is wrapped in
`BuzzerCommands`. `RecordingServices` accepts everything and keeps a record, for
`harvester plugins test` and for tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from hal.errors import DeviceUnavailable

log = logging.getLogger(__name__)



class NotFitted(DeviceUnavailable):
    """The node has no such device at all: a fact of its configuration, not a fault."""


class Actuators(Protocol):
    """LEDs and buzzer as a node's actors offer them (LedsActor, BuzzerActor, or a remote node)."""

    def set_pixel(self, index: int, r: int, g: int, b: int) -> Any:
        """Set one pixel."""
        ...

    def beep(self, count: int, duration_ms: int) -> Any:
        """Beep `count` times."""
        ...

    def play(self, pattern: str) -> Any:
        """Play a named pattern."""
        ...

    def silence(self) -> Any:
        """Stop sounding."""
        ...


class Services(Protocol):
    """The node's side of the host API; `node=None` means the node the plugin runs on."""

    node: str

    def set_led(self, node: str | None, index: int, r: int, g: int, b: int) -> None:
        """Show one LED colour now."""
        ...

    def beep(self, node: str | None, count: int, on_ms: int) -> None:
        """Beep `count` times, `on_ms` on and as long off."""
        ...

    def play(self, node: str | None, pattern: str) -> None:
        """Play a named buzzer pattern."""
        ...

    def silence(self, node: str | None) -> None:
        """Stop the buzzer (an acknowledged alert)."""
        ...

    def i2c_bus(self, number: int) -> Any:
        """The SMBus-like bus N (HalContext.i2c_bus); grants are checked before this is called."""
        ...

    def alert(self, event: dict[str, Any]) -> None:
        """Hand an alert event (raised, cleared, acknowledged) to the node (outbox / hub store)."""
        ...


class BuzzerCommands:
    """A hal BuzzerDevice with the buzzer actor's command signatures."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def beep(self, count: int, duration_ms: int) -> Any:
        """Beep `count` times, `duration_ms` on and as long off."""
        return self.device.beep(count=count, on_ms=duration_ms, off_ms=duration_ms if count > 1 else 0)

    def play(self, pattern: str) -> Any:
        """Play a named pattern."""
        return self.device.play(pattern)

    def silence(self) -> Any:
        """Stop sounding."""
        return self.device.silence()


class NodeServices:
    """Services over a node's own LEDs (set_pixel) and buzzer (beep/play/silence), plus other nodes'."""

    def __init__(self, node: str, leds: Any = None, buzzer: Any = None,
                 i2c_bus: Callable[[int], Any] | None = None,
                 alert_sink: Callable[[dict[str, Any]], None] | None = None,
                 remote: Callable[[str], Actuators] | None = None) -> None:
        self.node = node
        self.leds = leds
        self.buzzer = buzzer
        self._i2c_bus = i2c_bus
        self._alert_sink = alert_sink
        self._remote = remote

    def _route(self, node: str | None) -> Actuators | None:
        """None for this node, else the other node's actuators."""
        if node is None or node == self.node:
            return None
        if self._remote is None:
            raise DeviceUnavailable(f"this node cannot reach node {node!r}'s actuators")
        return self._remote(node)

    def set_led(self, node: str | None, index: int, r: int, g: int, b: int) -> None:
        """Set one pixel here or on another node (its leds actor)."""
        other = self._route(node)
        if other is not None:
            other.set_pixel(index, r, g, b)
            return
        if self.leds is None:
            raise NotFitted(f"node {self.node} has no LED strip")
        self.leds.set_pixel(index, r, g, b)

    def beep(self, node: str | None, count: int, on_ms: int) -> None:
        """Beep here or on another node."""
        (self._route(node) or self._buzzer()).beep(count, on_ms)

    def play(self, node: str | None, pattern: str) -> None:
        """Play a pattern here or on another node."""
        (self._route(node) or self._buzzer()).play(pattern)

    def silence(self, node: str | None) -> None:
        """Silence the buzzer here or on another node."""
        (self._route(node) or self._buzzer()).silence()

    def i2c_bus(self, number: int) -> Any:
        """The node's bus N."""
        if self._i2c_bus is None:
            raise DeviceUnavailable(f"node {self.node} offers no I2C bus to plugins")
        return self._i2c_bus(number)

    def alert(self, event: dict[str, Any]) -> None:
        """Pass the event to the sink the agent gave (or only log it)."""
        if self._alert_sink is None:
            log.info("alert %s %s/%s: %s", event["state"], event["plugin"], event["alert"], event["message"])
            return
        self._alert_sink(event)

    def _buzzer(self) -> Any:
        if self.buzzer is None:
            raise NotFitted(f"node {self.node} has no buzzer")
        return self.buzzer


class RecordingServices:
    """Accepts every command and records it (no hardware); the measuring instrument for tests."""

    def __init__(self, node: str = "test", i2c_bus: Callable[[int], Any] | None = None) -> None:
        self.node = node
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[dict[str, Any]] = []
        self._i2c_bus = i2c_bus

    def set_led(self, node: str | None, index: int, r: int, g: int, b: int) -> None:
        """Record an LED command."""
        self.calls.append(("set_led", node, index, (r, g, b)))

    def beep(self, node: str | None, count: int, on_ms: int) -> None:
        """Record a beep."""
        self.calls.append(("beep", node, count, on_ms))

    def play(self, node: str | None, pattern: str) -> None:
        """Record a pattern."""
        self.calls.append(("play", node, pattern))

    def silence(self, node: str | None) -> None:
        """Record a silence."""
        self.calls.append(("silence", node))

    def i2c_bus(self, number: int) -> Any:
        """The bus given at construction, if any."""
        if self._i2c_bus is None:
            raise DeviceUnavailable("no I2C bus in this test set-up")
        return self._i2c_bus(number)

    def alert(self, event: dict[str, Any]) -> None:
        """Record an alert event."""
        self.events.append(event)
