"""LED strip tests: the in-memory backend records frames, the tests read the record."""

from __future__ import annotations

import atexit
import itertools
import json
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

import hal.leds as leds
from hal.context import NODE_DEVICE_HISTORY, HalContext
from hal.errors import ActuatorArgumentError, DeviceUnavailable, HalConfigError
from hal.leds import COLOURS, OFF, LedStrip, MemoryPixels, Ws281xPixels, pack_rgb


def ticking_clock(start: float = 1000.0, step: float = 1.0) -> Any:
    """A clock that advances one step per call, so every frame has a distinct, known time."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


@pytest.fixture
def pixels() -> MemoryPixels:
    return MemoryPixels(count=11, brightness=0.5, clock=ticking_clock())


@pytest.fixture
def strip(pixels: MemoryPixels) -> LedStrip:
    return LedStrip(pixels)


def test_ledstrip_creation_shows_one_dark_frame(pixels: MemoryPixels) -> None:
    LedStrip(pixels)
    assert pixels.shown == 1
    (frame,) = pixels.frames
    assert frame.pixels == (OFF,) * 11
    assert frame.brightness == 0.5


def test_ledstrip_set_pixel_shows_exactly_one_frame(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.set_pixel(3, 255, 0, 0)
    assert pixels.shown == 2
    frame = pixels.frames[-1]
    assert frame.pixels[3] == (255, 0, 0)
    assert [i for i, rgb in enumerate(frame.pixels) if rgb != OFF] == [3]
    assert strip.pixel(3) == (255, 0, 0)


def test_ledstrip_fill_and_clear_each_show_one_frame(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.fill(0, 0, 255)
    assert pixels.frames[-1].pixels == ((0, 0, 255),) * 11
    strip.clear()
    assert pixels.frames[-1].pixels == (OFF,) * 11
    assert pixels.shown == 3


def test_ledstrip_brightness_setter_shows_frame_at_new_level(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.set_pixel(0, 0, 255, 0)
    strip.brightness = 0.2
    assert strip.brightness == 0.2
    last = pixels.frames[-1]
    assert last.brightness == 0.2
    assert last.pixels[0] == (0, 255, 0)
    assert pixels.shown == 3


def test_ledstrip_state_is_plain_types(strip: LedStrip) -> None:
    strip.set_pixel(10, 1, 2, 3)
    state = strip.state()
    assert state == json.loads(json.dumps(state))
    assert state["count"] == 11
    assert state["brightness"] == 0.5
    assert state["pixels"][10] == [1, 2, 3]
    assert state["pixels"][0] == [0, 0, 0]
    assert all(type(p) is list for p in state["pixels"])


def test_ledstrip_show_repeats_the_frame(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.set_pixel(1, 9, 9, 9)
    strip.show()
    assert pixels.shown == 3
    assert pixels.frames[-1].pixels == pixels.frames[-2].pixels


@pytest.mark.parametrize("index", [-1, 11, True, "1", 1.0, None])
def test_ledstrip_set_pixel_rejects_bad_index(strip: LedStrip, pixels: MemoryPixels, index: Any) -> None:
    with pytest.raises(ActuatorArgumentError, match=r"index must be an int in 0\.\.10"):
        strip.set_pixel(index, 1, 2, 3)
    assert pixels.shown == 1


@pytest.mark.parametrize("rgb", [(256, 0, 0), (0, -1, 0), (0, 0, 1.5), (True, 0, 0), (None, 0, 0), ("1", 0, 0)])
def test_ledstrip_rejects_bad_colour(strip: LedStrip, pixels: MemoryPixels, rgb: tuple[Any, ...]) -> None:
    with pytest.raises(ActuatorArgumentError, match=r"must be an int in 0\.\.255"):
        strip.set_pixel(0, *rgb)
    with pytest.raises(ActuatorArgumentError):
        strip.fill(*rgb)
    assert pixels.shown == 1
    assert strip.state()["pixels"][0] == [0, 0, 0]


def test_ledstrip_error_names_the_bad_component(strip: LedStrip) -> None:
    with pytest.raises(ActuatorArgumentError, match=r"green must be an int in 0\.\.255, got 300"):
        strip.set_pixel(0, 0, 300, 0)


@pytest.mark.parametrize("level", [1.1, -0.1, float("nan"), True, "0.5", None, float("inf"), 10**400])
def test_ledstrip_rejects_bad_brightness(strip: LedStrip, pixels: MemoryPixels, level: Any) -> None:
    with pytest.raises(ActuatorArgumentError, match=r"brightness must be a number in 0\.\.1"):
        strip.brightness = level
    assert strip.brightness == 0.5
    assert pixels.brightness == 0.5
    assert pixels.shown == 1


def test_ledstrip_brightness_accepts_bounds(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.brightness = 0
    strip.brightness = 1
    assert [f.brightness for f in pixels.frames[-2:]] == [0.0, 1.0]


def test_ledstrip_brightness_minus_zero_is_stored_as_zero(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.brightness = -0.0
    # -0.0 == 0.0, so compare the repr: the sign must not reach state() or the frame
    assert repr(strip.brightness) == repr(strip.state()["brightness"]) == repr(pixels.frames[-1].brightness) == "0.0"


def test_ledstrip_set_named_uses_colour_table(strip: LedStrip, pixels: MemoryPixels) -> None:
    for name in ("red", "green", "amber", "off"):
        assert name in COLOURS
    strip.set_named(1, "RED")
    strip.set_named(2, "amber")
    assert pixels.frames[-1].pixels[1] == COLOURS["red"]
    assert pixels.frames[-1].pixels[2] == COLOURS["amber"]
    strip.set_named(1, "off")
    assert strip.pixel(1) == OFF


def test_ledstrip_set_named_rejects_unknown_colour(strip: LedStrip, pixels: MemoryPixels) -> None:
    with pytest.raises(ActuatorArgumentError, match=r"unknown colour 'purple'; known: .*amber"):
        strip.set_named(0, "purple")
    with pytest.raises(ActuatorArgumentError):
        strip.set_named(0, None)  # type: ignore[arg-type]
    with pytest.raises(ActuatorArgumentError):
        strip.set_named(99, "red")
    assert pixels.shown == 1


def test_memorypixels_frames_are_bounded_and_counted() -> None:
    backend = MemoryPixels(count=2, clock=ticking_clock(), max_frames=3)
    strip = LedStrip(backend)
    for value in range(5):
        strip.set_pixel(0, value, 0, 0)
    assert backend.shown == 6
    assert [f.pixels[0] for f in backend.frames] == [(2, 0, 0), (3, 0, 0), (4, 0, 0)]


def test_memorypixels_timestamps_come_from_injected_clock() -> None:
    backend = MemoryPixels(count=1, clock=ticking_clock(start=50.0, step=2.0))
    strip = LedStrip(backend)  # the power-on dark frame consumed 50.0
    strip.set_pixel(0, 1, 1, 1)
    assert [f.ts for f in backend.frames] == [52.0, 54.0]


def test_memorypixels_current_is_dark_until_first_show() -> None:
    backend = MemoryPixels(count=3, brightness=0.25, clock=ticking_clock())
    assert backend.current().pixels == (OFF,) * 3
    assert backend.current().brightness == 0.25
    assert backend.frames == []
    strip = LedStrip(backend)
    strip.set_pixel(2, 5, 6, 7)
    assert backend.current() == backend.frames[-1]
    assert backend.current().pixels[2] == (5, 6, 7)


def test_memorypixels_rejects_bad_configuration() -> None:
    with pytest.raises(HalConfigError):
        MemoryPixels(count=0)
    with pytest.raises(HalConfigError):
        MemoryPixels(brightness=2.0)
    with pytest.raises(ActuatorArgumentError):
        MemoryPixels(count=2).set(2, (1, 1, 1))


class FlakyPixels(MemoryPixels):
    """A memory strip whose next show fails, as a render error on real hardware would."""

    fail_next = False

    def show(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise DeviceUnavailable("render failed")
        super().show()


def test_ledstrip_failed_show_keeps_displayed_state() -> None:
    backend = FlakyPixels(count=4, clock=ticking_clock())
    strip = LedStrip(backend)
    strip.set_pixel(0, 10, 10, 10)
    backend.fail_next = True
    with pytest.raises(DeviceUnavailable):
        strip.set_pixel(1, 255, 0, 0)
    assert strip.state()["pixels"][1] == [0, 0, 0]
    strip.set_pixel(2, 0, 0, 255)
    # The failed change must not leak into the next frame.
    assert backend.frames[-1].pixels == ((10, 10, 10), OFF, (0, 0, 255), OFF)
    backend.fail_next = True
    with pytest.raises(DeviceUnavailable):
        strip.brightness = 0.9
    assert strip.brightness == 0.5
    assert backend.brightness == 0.5


def test_ledstrip_close_clears_then_closes(strip: LedStrip, pixels: MemoryPixels) -> None:
    strip.fill(255, 0, 0)
    strip.close()
    assert pixels.frames[-1].pixels == (OFF,) * 11
    assert pixels.closed
    with pytest.raises(DeviceUnavailable, match="closed"):
        strip.set_pixel(0, 1, 1, 1)
    strip.close()  # idempotent
    assert pixels.shown == 3


def test_ledstrip_close_without_clear_keeps_colours(pixels: MemoryPixels) -> None:
    with LedStrip(pixels) as strip:
        strip.fill(0, 255, 0)
        strip.close(clear=False)
    assert pixels.frames[-1].pixels == ((0, 255, 0),) * 11
    assert pixels.closed


def test_ledstrip_concurrent_writers_each_get_one_whole_frame() -> None:
    backend = MemoryPixels(count=11, clock=ticking_clock(), max_frames=5000)
    strip = LedStrip(backend)
    writers, rounds = 8, 50
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            start.wait()
            for value in range(rounds):
                strip.set_pixel(index, value, index, 0)
        except BaseException as exc:  # recorded, then asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert backend.shown == 1 + writers * rounds
    # Each frame differs from the previous one by exactly one pixel: no torn updates.
    frames = backend.frames
    for before, after in itertools.pairwise(frames):
        assert sum(a != b for a, b in zip(before.pixels, after.pixels, strict=True)) <= 1
    assert strip.state()["pixels"][:writers] == [[rounds - 1, i, 0] for i in range(writers)]


def test_halcontext_mock_pixel_backend_is_memory(tmp_path: Path) -> None:
    ctx = HalContext("mock", "pi4", tmp_path, clock=ticking_clock())
    backend = ctx.pixel_backend(count=11, gpio=18, brightness=0.3)
    assert isinstance(backend, MemoryPixels)
    strip = LedStrip(backend)
    strip.set_named(1, "red")
    assert backend.current().pixels[1] == (255, 0, 0)
    assert backend.current().brightness == 0.3
    for i in range(NODE_DEVICE_HISTORY + 5):  # a node's mock strip keeps only its recent frames
        strip.set_pixel(0, i, 0, 0)
    assert len(backend.frames) == NODE_DEVICE_HISTORY and backend.shown == NODE_DEVICE_HISTORY + 7
    ctx.close()


# --- rpi_ws281x backend, with the library replaced by a recording fake ---------------

def test_pack_rgb_is_rrggbb() -> None:
    assert pack_rgb((255, 128, 1)) == 0xFF8001
    assert pack_rgb((0, 0, 0)) == 0
    assert pack_rgb((0, 255, 0)) == 0x00FF00


def test_board_model_reads_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert leds.board_model(model) == "Raspberry Pi 4 Model B Rev 1.4"
    assert leds.board_model(tmp_path / "missing") is None


class FakeWs281x:
    """A stand-in rpi_ws281x module that records calls (the real one segfaults on x86)."""

    def __init__(self, begin_error: str | None = None, render_error: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.strips: list[Any] = []
        fake = self

        class PixelStrip:
            def __init__(self, num: int, pin: int, **kwargs: Any) -> None:
                fake.calls.append(("init", num, pin, kwargs))
                fake.strips.append(self)
                self._leds: object | None = object()

            def begin(self) -> None:
                fake.calls.append(("begin",))
                if begin_error:
                    raise RuntimeError(begin_error)

            def setPixelColor(self, n: int, color: int) -> None:
                fake.calls.append(("setPixelColor", n, color))

            def setBrightness(self, value: int) -> None:
                fake.calls.append(("setBrightness", value))

            def show(self) -> None:
                fake.calls.append(("show",))
                if render_error:
                    raise RuntimeError(render_error)

            def _cleanup(self) -> None:
                fake.calls.append(("_cleanup",))

        self.module = types.ModuleType("rpi_ws281x")
        self.module.PixelStrip = PixelStrip  # type: ignore[attr-defined]
        self.module.ws = types.SimpleNamespace(  # type: ignore[attr-defined]
            delete_ws2811_t=lambda leds: fake.calls.append(("delete_ws2811_t",)))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def on_pi4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leds, "board_model", lambda path=None: "Raspberry Pi 4 Model B Rev 1.4")


@pytest.fixture
def unregistered(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(atexit, "unregister", calls.append)
    return calls


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeWs281x) -> None:
    monkeypatch.setitem(sys.modules, "rpi_ws281x", fake.module)


def test_ws281x_without_library_raises_device_unavailable(
        monkeypatch: pytest.MonkeyPatch, on_pi4: None) -> None:
    monkeypatch.setitem(sys.modules, "rpi_ws281x", None)  # makes `import rpi_ws281x` fail
    with pytest.raises(DeviceUnavailable, match=r"rpi_ws281x is not installed.*mock") as info:
        Ws281xPixels(count=11)
    assert isinstance(info.value.__cause__, ImportError)


def test_ws281x_packs_colours_and_scales_brightness(monkeypatch: pytest.MonkeyPatch, on_pi4: None) -> None:
    fake = FakeWs281x()
    install(monkeypatch, fake)
    strip = LedStrip(Ws281xPixels(count=3, gpio=18, brightness=0.5))
    init = fake.calls[0]
    assert init[:3] == ("init", 3, 18)
    assert init[3] == {"freq_hz": 800000, "dma": 10, "invert": False, "brightness": 128, "channel": 0}
    assert fake.names()[1] == "begin"
    fake.calls.clear()
    strip.set_pixel(1, 255, 128, 1)
    strip.brightness = 1.0
    assert fake.calls == [("setPixelColor", 1, 0xFF8001), ("show",), ("setBrightness", 255), ("show",)]
    assert strip.state()["pixels"][1] == [255, 128, 1]


def test_ws281x_begin_failure_is_device_unavailable_and_never_touches_pixels(
        monkeypatch: pytest.MonkeyPatch, on_pi4: None, unregistered: list[Any]) -> None:
    fake = FakeWs281x(begin_error="ws2811_init failed with code -5 (mmap() failed)")
    install(monkeypatch, fake)
    with pytest.raises(DeviceUnavailable, match=r"GPIO 18.*mmap\(\) failed.*root") as info:
        Ws281xPixels(count=11)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "setPixelColor" not in fake.names()
    # The library's atexit hook would finalise the failed struct and segfault: it must be gone.
    assert "_cleanup" not in fake.names()
    (strip,) = fake.strips
    assert unregistered == [strip._cleanup]
    assert fake.names()[-1] == "delete_ws2811_t"
    assert strip._leds is None


def test_ws281x_refuses_pi5_before_loading_library(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWs281x()
    install(monkeypatch, fake)
    monkeypatch.setattr(leds, "board_model", lambda path=None: "Raspberry Pi 5 Model B Rev 1.0")
    with pytest.raises(DeviceUnavailable, match="Raspberry Pi 5"):
        Ws281xPixels(count=11)
    assert fake.calls == []


@pytest.mark.parametrize("kwargs, message", [
    ({"gpio": 17}, r"cannot drive GPIO 17"),
    ({"gpio": 13}, r"GPIO 13 is on PWM channel 1"),
    ({"dma": 5}, r"DMA channel"),
    ({"count": 0}, r"pixel count"),
    ({"brightness": 3}, r"brightness"),
])
def test_ws281x_rejects_bad_configuration(monkeypatch: pytest.MonkeyPatch, on_pi4: None,
                                          kwargs: dict[str, Any], message: str) -> None:
    fake = FakeWs281x()
    install(monkeypatch, fake)
    with pytest.raises(HalConfigError, match=message):
        Ws281xPixels(**{"count": 11, **kwargs})
    assert fake.calls == []


def test_ws281x_render_failure_is_device_unavailable(monkeypatch: pytest.MonkeyPatch, on_pi4: None) -> None:
    fake = FakeWs281x(render_error="ws2811_render failed with code -11 (DMA error)")
    install(monkeypatch, fake)
    backend = Ws281xPixels(count=2, gpio=13, channel=1)
    with pytest.raises(DeviceUnavailable, match="DMA error"):
        backend.show()


def test_ws281x_close_finalises_once_and_refuses_later_calls(
        monkeypatch: pytest.MonkeyPatch, on_pi4: None, unregistered: list[Any]) -> None:
    fake = FakeWs281x()
    install(monkeypatch, fake)
    backend = Ws281xPixels(count=2)
    backend.close()
    backend.close()
    assert fake.names().count("_cleanup") == 1
    assert unregistered == [fake.strips[0]._cleanup]
    with pytest.raises(DeviceUnavailable, match="closed"):
        backend.set(0, (1, 2, 3))
    with pytest.raises(DeviceUnavailable, match="closed"):
        backend.show()
