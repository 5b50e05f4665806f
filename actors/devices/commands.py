"""Operator commands for the LED strip and the buzzer, checked once for every way they arrive
(the dashboard's controls, Home Assistant over MQTT): an action the actors know, arguments in
range, nothing that does not apply. The actors check them again; the buzzer's mute holds."""

from __future__ import annotations

import reprlib
from typing import Any

from actors.errors import BadRequest


def _int_field(body: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if value is None:
        raise BadRequest(f"{name!r} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name!r} must be an integer in {low}..{high}, got {reprlib.repr(value)}")
    return value


BUZZER_ACTIONS = ("beep", "on", "off", "silence")
LED_ACTIONS = ("set_pixel", "set_named", "fill", "clear", "brightness")
MAX_PIXEL = 1023  # the strip itself knows its length and rejects indexes past it


def _rgb(body: dict[str, Any]) -> list[int]:
    rgb = body.get("rgb")
    if not isinstance(rgb, list) or len(rgb) != 3 or \
            any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in rgb):
        raise BadRequest(f"'rgb' must be [r, g, b] with integers 0..255, got {rgb!r}")
    return rgb


def _action(body: dict[str, Any], actions: tuple[str, ...]) -> str:
    action = body.get("action")
    if action not in actions:
        raise BadRequest(f"'action' must be one of {', '.join(actions)}, got {action!r}")
    return action


def _only(body: dict[str, Any], action: str, allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed - {"node", "action"})
    if extra:
        raise BadRequest(f"{', '.join(extra)} does not apply to action {action!r}")


def buzzer_call(body: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The buzzer method and arguments for a control body (BadRequest when it makes no sense)."""
    action = _action(body, BUZZER_ACTIONS)
    if action == "beep":
        _only(body, action, {"duration_ms", "count"})
        return "beep", (_int_field(body, "count", 1, 20, 1), _int_field(body, "duration_ms", 10, 5000, 200))
    _only(body, action, set())
    return action, ()


def leds_call(body: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The LED strip method and arguments for a control body (BadRequest when it makes no sense)."""
    action = _action(body, LED_ACTIONS)
    if action == "set_pixel":
        _only(body, action, {"index", "rgb"})
        return action, (_int_field(body, "index", 0, MAX_PIXEL), *_rgb(body))
    if action == "set_named":
        _only(body, action, {"index", "colour"})
        colour = body.get("colour")
        if not isinstance(colour, str) or not 0 < len(colour) <= 32:
            raise BadRequest(f"'colour' must be a colour name such as red, amber, green, off; got {colour!r}")
        return action, (_int_field(body, "index", 0, MAX_PIXEL), colour)
    if action == "fill":
        _only(body, action, {"rgb"})
        return action, tuple(_rgb(body))
    if action == "brightness":
        _only(body, action, {"value"})
        value = body.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise BadRequest(f"'value' must be a number in 0..1, got {value!r}")
        return action, (float(value),)
    _only(body, action, set())
    return action, ()
