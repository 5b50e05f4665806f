"""The LED strip: a validated, thread-safe pixel buffer over a swappable pixel backend.

Backends: `Ws281xPixels` drives WS281x pixels through rpi_ws281x (real mode);
`MemoryPixels` records every frame it is shown (mock mode and tests read that record).
"""

from __future__ import annotations

import atexit
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from hal.errors import ActuatorArgumentError, DeviceUnavailable, HalConfigError

RGB = tuple[int, int, int]
OFF: RGB = (0, 0, 0)

# Full-scale "amber" (255, 191, 0) looks yellow on WS2812s, whose green die is the
# brightest; less green reads as amber on the strip itself.
COLOURS: dict[str, RGB] = {
    "off": OFF,
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "amber": (255, 110, 0),
    "yellow": (255, 200, 0),
    "white": (255, 255, 255),
}


class Frame(NamedTuple):
    """One frame as the strip displayed it: when, at what brightness, which colours."""

    ts: float
    brightness: float
    pixels: tuple[RGB, ...]


class PixelBackend(Protocol):
    """What `LedStrip` needs from a strip driver; callers validate, backends just drive."""

    @property
    def count(self) -> int:
        """Number of pixels on the strip."""
        ...

    @property
    def brightness(self) -> float:
        """Global brightness, 0..1, applied at the next `show()`."""
        ...

    def set(self, index: int, rgb: RGB) -> None:
        """Write one pixel into the buffer (not displayed until `show()`)."""
        ...

    def set_brightness(self, value: float) -> None:
        """Set global brightness 0..1 (not displayed until `show()`)."""
        ...

    def show(self) -> None:
        """Push the buffer to the pixels."""
        ...

    def close(self) -> None:
        """Release the hardware; later calls raise DeviceUnavailable."""
        ...


class MemoryPixels:
    """In-memory pixel backend that records every frame shown, like gpiozero's MockPin."""

    def __init__(self, count: int = 11, brightness: float = 0.5,
                 clock: Callable[[], float] = time.time, max_frames: int = 1000) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise HalConfigError(f"pixel count must be a positive int, got {count!r}")
        if max_frames < 1:
            raise HalConfigError(f"max_frames must be >= 1, got {max_frames!r}")
        self._count = count
        self._brightness = _check_brightness(brightness, HalConfigError)
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: list[RGB] = [OFF] * count
        # Bounded so a long-running mock node does not grow without limit; `shown`
        # keeps the true total for tests and the dashboard.
        self._frames: deque[Frame] = deque(maxlen=max_frames)
        self._dark = Frame(clock(), self._brightness, tuple(self._buffer))
        self.shown = 0
        self._closed = False

    @property
    def count(self) -> int:
        """Number of pixels."""
        return self._count

    @property
    def brightness(self) -> float:
        """Brightness that the next frame will be shown at."""
        return self._brightness

    @property
    def frames(self) -> list[Frame]:
        """A snapshot of the recorded frames, oldest first (at most `max_frames`)."""
        with self._lock:
            return list(self._frames)

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    def current(self) -> Frame:
        """The frame on display now: the last one shown, or the dark power-on frame."""
        with self._lock:
            return self._frames[-1] if self._frames else self._dark

    def set(self, index: int, rgb: RGB) -> None:
        """Write one pixel into the buffer."""
        self._check_open()
        # A negative index would silently wrap in a list; refuse it like real hardware would.
        if not 0 <= index < self._count:
            raise ActuatorArgumentError(f"pixel index must be in 0..{self._count - 1}, got {index!r}")
        with self._lock:
            self._buffer[index] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))

    def set_brightness(self, value: float) -> None:
        """Set the brightness the next frame is shown at."""
        self._check_open()
        self._brightness = _check_brightness(value, ActuatorArgumentError)

    def show(self) -> None:
        """Record the buffer as a new frame."""
        self._check_open()
        with self._lock:
            self._frames.append(Frame(self._clock(), self._brightness, tuple(self._buffer)))
            self.shown += 1

    def close(self) -> None:
        """Stop accepting frames; the record stays readable."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceUnavailable("in-memory LED strip is closed")


# GPIOs that rpi_ws281x can drive, with the PWM channel each needs: PWM0 on 12/18,
# PWM1 on 13/19, PCM on 21, SPI on 10 (channel 0 for the last two).
WS281X_GPIO_CHANNEL = {10: 0, 12: 0, 18: 0, 21: 0, 13: 1, 19: 1}
_MODEL_PATH = Path("/proc/device-tree/model")


def board_model(path: Path = _MODEL_PATH) -> str | None:
    """The device-tree board model ("Raspberry Pi 4 Model B Rev 1.4"), or None off a Pi."""
    try:
        return path.read_text(errors="replace").rstrip("\x00\n")
    except FileNotFoundError:
        # Not a device-tree board (x86 CI, containers): there is no model to report.
        return None


def pack_rgb(rgb: RGB) -> int:
    """Pack (r, g, b) into rpi_ws281x's 0x00RRGGBB word; the library reorders to GRB on the wire."""
    r, g, b = rgb
    return (r << 16) | (g << 8) | b


class Ws281xPixels:
    """WS281x pixels driven by rpi_ws281x; needs root (or SPI on GPIO 10) and a Pi older than the Pi 5."""

    def __init__(self, count: int, gpio: int = 18, brightness: float = 0.5, freq_hz: int = 800000,
                 dma: int = 10, invert: bool = False, channel: int = 0) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise HalConfigError(f"pixel count must be a positive int, got {count!r}")
        if gpio not in WS281X_GPIO_CHANNEL:
            raise HalConfigError(
                f"rpi_ws281x cannot drive GPIO {gpio!r}; use one of {sorted(WS281X_GPIO_CHANNEL)}")
        if channel != WS281X_GPIO_CHANNEL[gpio]:
            raise HalConfigError(
                f"GPIO {gpio} is on PWM channel {WS281X_GPIO_CHANNEL[gpio]}, but channel={channel!r}")
        # DMA 5 is used by the SD card on current kernels and corrupts the filesystem.
        if dma == 5 or not 0 <= dma <= 14:
            raise HalConfigError(f"DMA channel must be in 0..14 and not 5, got {dma!r}")
        level = _check_brightness(brightness, HalConfigError)
        model = board_model()
        # On a Pi 5 the library fails inside init; refuse before touching it.
        if model is not None and "Raspberry Pi 5" in model:
            raise DeviceUnavailable(f"rpi_ws281x does not support the {model}; use an SPI/PIO driver there")
        try:
            import rpi_ws281x  # real mode only: the package cannot even be used on CI
        except ImportError as exc:
            raise DeviceUnavailable(
                "rpi_ws281x is not installed: `pip install rpi-ws281x` on the Pi, "
                "or run the node with HAL mode 'mock'") from exc
        self._lib: Any = rpi_ws281x
        self._count = count
        self._gpio = gpio
        self._brightness = level
        self._lock = threading.Lock()
        self._strip: Any = rpi_ws281x.PixelStrip(
            count, gpio, freq_hz=freq_hz, dma=dma, invert=invert,
            brightness=_to_byte(level), channel=channel)
        try:
            self._strip.begin()
        except RuntimeError as exc:
            self._discard_failed_strip()
            raise DeviceUnavailable(
                f"cannot start the WS281x strip on GPIO {gpio} (DMA {dma}): {exc}. rpi_ws281x needs "
                f"root for PWM/PCM (or SPI enabled for GPIO 10), a Raspberry Pi before the Pi 5 "
                f"(board: {model or 'not a Raspberry Pi'}), and audio off when using PWM") from exc
        self._closed = False

    @property
    def count(self) -> int:
        """Number of pixels."""
        return self._count

    @property
    def brightness(self) -> float:
        """Brightness the next `show()` applies."""
        return self._brightness

    def set(self, index: int, rgb: RGB) -> None:
        """Write one pixel into the library's buffer."""
        with self._lock:
            self._check_open()
            if not 0 <= index < self._count:
                raise ActuatorArgumentError(f"pixel index must be in 0..{self._count - 1}, got {index!r}")
            self._strip.setPixelColor(index, pack_rgb(rgb))

    def set_brightness(self, value: float) -> None:
        """Set brightness 0..1 (the library scales 0..255 at render time)."""
        level = _check_brightness(value, ActuatorArgumentError)
        with self._lock:
            self._check_open()
            self._strip.setBrightness(_to_byte(level))
            self._brightness = level

    def show(self) -> None:
        """Render the buffer to the strip."""
        with self._lock:
            self._check_open()
            try:
                self._strip.show()
            except RuntimeError as exc:
                raise DeviceUnavailable(f"WS281x render on GPIO {self._gpio} failed: {exc}") from exc

    def close(self) -> None:
        """Finalise the library (stops DMA); the pixels keep their last colours."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # PixelStrip has no public close; _cleanup is what its atexit hook runs, and
            # it is idempotent, so the hook finding nothing to do later is fine.
            self._strip._cleanup()
            atexit.unregister(self._strip._cleanup)

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceUnavailable(f"WS281x strip on GPIO {self._gpio} is closed")

    def _discard_failed_strip(self) -> None:
        # rpi_ws281x 5.0.0 registers _cleanup with atexit, and _cleanup calls ws2811_fini
        # even after a failed init, which segfaults at interpreter exit on a non-Pi board.
        # Drop the hook and free the bare struct ourselves so the failure stays an error.
        strip = self._strip
        atexit.unregister(strip._cleanup)
        ws = getattr(self._lib, "ws", None)
        leds = getattr(strip, "_leds", None)
        if ws is not None and leds is not None:
            ws.delete_ws2811_t(leds)
            strip._leds = None
        self._closed = True


class LedStrip:
    """The node's LED strip: validated, thread-safe; every command shows exactly one frame.

    Commands act immediately (actuator semantics): `set_pixel`, `fill`, `clear`,
    `set_named` and setting `brightness` each update the buffer and show it, so a
    remote caller never leaves the strip with a half-applied change. On creation the
    strip is cleared, because WS281x pixels latch whatever a previous process left.
    """

    def __init__(self, backend: PixelBackend) -> None:
        self._backend = backend
        self._lock = threading.RLock()
        self._count = backend.count
        self._brightness = backend.brightness
        self._pixels: list[RGB] = [OFF] * self._count
        self._closed = False
        self._apply(dict.fromkeys(range(self._count), OFF))

    @property
    def count(self) -> int:
        """Number of pixels."""
        return self._count

    @property
    def brightness(self) -> float:
        """Global brightness 0..1."""
        with self._lock:
            return self._brightness

    @brightness.setter
    def brightness(self, value: float) -> None:
        level = _check_brightness(value, ActuatorArgumentError)
        with self._lock:
            previous = self._brightness
            self._backend.set_brightness(level)
            try:
                self._backend.show()
            except Exception:
                # Keep the backend's pending brightness equal to what is on display.
                self._backend.set_brightness(previous)
                raise
            self._brightness = level

    def set_pixel(self, index: int, r: int, g: int, b: int) -> None:
        """Set one pixel and show it."""
        self._check_index(index)
        self._apply({index: _check_rgb(r, g, b)})

    def set_named(self, index: int, name: str) -> None:
        """Set one pixel to a colour from `COLOURS` ("red", "green", "amber", "off", ...) and show it."""
        self._check_index(index)
        self._apply({index: named_colour(name)})

    def fill(self, r: int, g: int, b: int) -> None:
        """Set every pixel to one colour and show it (one frame)."""
        rgb = _check_rgb(r, g, b)
        self._apply(dict.fromkeys(range(self._count), rgb))

    def clear(self) -> None:
        """Turn every pixel off (one frame)."""
        self._apply(dict.fromkeys(range(self._count), OFF))

    def show(self) -> None:
        """Show the buffer again (e.g. after a glitch on the data line)."""
        with self._lock:
            self._backend.show()

    def pixel(self, index: int) -> RGB:
        """The colour of one pixel as displayed."""
        self._check_index(index)
        with self._lock:
            return self._pixels[index]

    def state(self) -> dict[str, Any]:
        """Plain-types snapshot for the wire: count, brightness, pixels as [[r, g, b], ...]."""
        with self._lock:
            return {
                "count": self._count,
                "brightness": self._brightness,
                "pixels": [list(rgb) for rgb in self._pixels],
            }

    def close(self, clear: bool = True) -> None:
        """Release the backend, by default turning the pixels off first.

        Clearing is the default because pixels keep their colours after the process
        ends, and a red LED nobody drives any more would be a stale alert.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if clear:
                    self.clear()
            finally:
                self._backend.close()

    def __enter__(self) -> LedStrip:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _apply(self, changes: dict[int, RGB]) -> None:
        """Write changes to the backend and show them as one frame; on failure keep the old buffer."""
        with self._lock:
            for index, rgb in changes.items():
                self._backend.set(index, rgb)
            try:
                self._backend.show()
            except Exception:
                # Put the backend buffer back so the next frame does not carry this
                # failed change; state() keeps reporting what is really displayed.
                for index in changes:
                    self._backend.set(index, self._pixels[index])
                raise
            for index, rgb in changes.items():
                self._pixels[index] = rgb

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self._count:
            raise ActuatorArgumentError(f"pixel index must be an int in 0..{self._count - 1}, got {index!r}")


def named_colour(name: str) -> RGB:
    """The RGB value of a named colour (case-insensitive), or ActuatorArgumentError."""
    key = name.strip().lower() if isinstance(name, str) else name
    try:
        return COLOURS[key]
    except (KeyError, TypeError) as exc:
        raise ActuatorArgumentError(f"unknown colour {name!r}; known: {', '.join(sorted(COLOURS))}") from exc


def _check_rgb(r: int, g: int, b: int) -> RGB:
    for label, value in (("red", r), ("green", g), ("blue", b)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise ActuatorArgumentError(f"{label} must be an int in 0..255, got {value!r}")
    return (r, g, b)


def _check_brightness(value: float, error: type[Exception]) -> float:
    # The range test comes first: math.isnan(10**400) raises OverflowError (NaN fails it anyway).
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0.0 <= value <= 1.0 or math.isnan(value)):
        raise error(f"brightness must be a number in 0..1, got {value!r}")
    return float(value) + 0.0  # IEEE: -0.0 + 0.0 is +0.0, so state() never echoes -0.0


def _to_byte(level: float) -> int:
    return round(level * 255)
