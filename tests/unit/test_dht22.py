"""Dht22Sensor against fake sysfs trees: discovery, retries, spacing, median, range checks."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import pytest

from hal.dht22 import Dht22Sensor
from hal.emulated.environment import RoomSimulator
from hal.emulated.sysfs import EmulatedSysfs
from hal.errors import HalConfigError
from hal.readings import Reading
from hal.sensor import SENSOR_KINDS
from hal.sysfs import SysfsRoot

IIO = "sys/bus/iio/devices"
T0 = 1_700_000_000.0


class FakeClock:
    """Time that only moves when the sensor sleeps (or a test says so); sleeps are recorded."""

    def __init__(self) -> None:
        self.t = T0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


class ScriptedSysfs(SysfsRoot):
    """A real tmp tree whose dht11 temperature reads can be scripted to fail; reads are timed."""

    def __init__(self, base: Path, clock: FakeClock) -> None:
        super().__init__(base)
        self.clock = clock
        self.errors: list[int | None] = []  # consumed one per in_temp_input read
        self.temp_reads: list[float] = []

    def read_text(self, path: str) -> str:
        if path.endswith("/in_temp_input"):
            self.temp_reads.append(self.clock())
            if self.errors:
                code = self.errors.pop(0)
                if code is not None:
                    raise OSError(code, errno.errorcode[code], path)
        return super().read_text(path)


class Ctx:
    """The three things a sensor takes from HalContext."""

    def __init__(self, sysfs: object, clock: FakeClock, node: str = "pi4") -> None:
        self._sysfs = sysfs
        self.clock = clock
        self.node = node

    def sysfs(self) -> object:
        return self._sysfs


def add_device(base: Path, index: int, name: str, temp: str | None = "21300",
               hum: str | None = "48800") -> Path:
    dev = base / IIO / f"iio:device{index}"
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "name").write_text(name + "\n")
    if temp is not None:
        (dev / "in_temp_input").write_text(temp + "\n")
    if hum is not None:
        (dev / "in_humidityrelative_input").write_text(hum + "\n")
    return dev


def set_values(dev: Path, temp: str, hum: str = "48800") -> None:
    (dev / "in_temp_input").write_text(temp + "\n")
    (dev / "in_humidityrelative_input").write_text(hum + "\n")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fs(tmp_path: Path, clock: FakeClock) -> ScriptedSysfs:
    return ScriptedSysfs(tmp_path, clock)


def make_sensor(fs: object, clock: FakeClock, **kw: object) -> Dht22Sensor:
    return Dht22Sensor(ctx=Ctx(fs, clock), name="dht", sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def values(readings: list[Reading]) -> dict[str, float | None]:
    return {r.quantity: r.value for r in readings}


def assert_spaced(times: list[float], interval: float = 2.0) -> None:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= interval - 1e-9 for g in gaps), gaps


def test_dht22_finds_device_by_name_not_index(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "mcp3008", temp="99000", hum=None)  # an ADC that also has a temp channel
    add_device(tmp_path, 1, "dht11", temp="21300", hum="48800")
    sensor = make_sensor(fs, clock)
    readings = sensor.read()
    assert values(readings) == {"temperature": 21.3, "humidity": 48.8}
    assert all(r.ok and r.sensor == "dht" and r.node == "pi4" for r in readings)
    assert [r.unit for r in readings] == ["°C", "%"]
    assert sensor.device_path == "/sys/bus/iio/devices/iio:device1"


def test_dht22_rediscovers_when_the_index_changes(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    dev = add_device(tmp_path, 0, "dht11", temp="21300")
    sensor = make_sensor(fs, clock)
    assert sensor.read()[0].ok
    # Overlay reloaded: the dht11 is now iio:device2 and iio:device0 is another device.
    shutil.move(dev, tmp_path / IIO / "iio:device2")
    add_device(tmp_path, 0, "bme280", temp="30000")
    set_values(tmp_path / IIO / "iio:device2", "22000")
    clock.t += 10
    readings = sensor.read()
    assert all(r.ok for r in readings)
    assert sensor.device_path == "/sys/bus/iio/devices/iio:device2"
    assert values(readings)["temperature"] == pytest.approx((21.3 + 22.0) / 2)


def test_dht22_rediscovers_when_a_file_vanishes_mid_read(tmp_path: Path, fs: ScriptedSysfs,
                                                         clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    sensor = make_sensor(fs, clock)
    assert sensor.read()[0].ok
    clock.t += 10
    fs.errors = [errno.ENODEV]
    readings = sensor.read()
    assert all(r.ok for r in readings)
    assert_spaced(fs.temp_reads)


def test_dht22_retries_eio_and_etimedout_at_least_min_interval_apart(
        tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    fs.errors = [errno.EIO, errno.ETIMEDOUT, None]
    readings = make_sensor(fs, clock).read()
    assert all(r.ok for r in readings)
    assert len(fs.temp_reads) == 3
    assert_spaced(fs.temp_reads, 2.0)
    assert clock.sleeps == [2.0, 2.0]


def test_dht22_honours_a_longer_min_interval(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    fs.errors = [errno.EIO, None]
    assert make_sensor(fs, clock, min_interval=3.5).read()[0].ok
    assert_spaced(fs.temp_reads, 3.5)


def test_dht22_gives_up_after_attempts_with_a_reason(tmp_path: Path, fs: ScriptedSysfs,
                                                     clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    fs.errors = [errno.EIO, errno.EIO, errno.ETIMEDOUT, None]
    readings = make_sensor(fs, clock).read()
    assert [r.quality for r in readings] == ["unavailable", "unavailable"]
    assert all(r.value is None for r in readings)
    assert "3 attempts" in readings[0].reason and "ETIMEDOUT" in readings[0].reason
    assert len(fs.temp_reads) == 3
    assert_spaced(fs.temp_reads)


def test_dht22_next_read_after_a_failure_waits_its_turn(tmp_path: Path, fs: ScriptedSysfs,
                                                        clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    sensor = make_sensor(fs, clock, attempts=1)
    fs.errors = [errno.EIO]
    assert not sensor.read()[0].ok
    clock.t += 0.5  # the scheduler calls again quickly
    assert sensor.read()[0].ok
    assert_spaced(fs.temp_reads)
    assert clock.sleeps == [1.5]


def test_dht22_read_within_min_interval_of_a_good_one_reuses_the_median(
        tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    sensor = make_sensor(fs, clock)
    first = sensor.read()
    clock.t += 1.0
    second = sensor.read()
    assert values(second) == values(first)
    assert len(fs.temp_reads) == 1 and clock.sleeps == []


def test_dht22_median_of_last_three_rejects_a_spike(tmp_path: Path, fs: ScriptedSysfs,
                                                    clock: FakeClock) -> None:
    dev = add_device(tmp_path, 0, "dht11")
    sensor = make_sensor(fs, clock)
    reported = []
    for temp in ("21000", "21200", "60000", "21400", "21600"):
        set_values(dev, temp)
        reported.append(values(sensor.read())["temperature"])
        clock.t += 30
    # 60 °C is in range but is never reported: medians of [21.0, 21.2, 60] and so on.
    assert reported == [21.0, pytest.approx(21.1), 21.2, 21.4, 21.6]


def test_dht22_drops_samples_older_than_max_sample_age(tmp_path: Path, fs: ScriptedSysfs,
                                                       clock: FakeClock) -> None:
    dev = add_device(tmp_path, 0, "dht11")
    sensor = make_sensor(fs, clock, max_sample_age=600.0)
    set_values(dev, "10000")
    sensor.read()
    clock.t += 3600
    set_values(dev, "25000")
    assert values(sensor.read())["temperature"] == 25.0


@pytest.mark.parametrize(("temp", "hum", "why"), [
    ("95000", "48800", "in_temp_input 95"),
    ("-45000", "48800", "in_temp_input -45"),
    ("21300", "100500", "in_humidityrelative_input 100.5"),
    ("21300", "-100", "in_humidityrelative_input -0.1"),
    ("garbage", "48800", "not an integer"),
])
def test_dht22_rejects_out_of_range_samples(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock,
                                            temp: str, hum: str, why: str) -> None:
    add_device(tmp_path, 0, "dht11", temp=temp, hum=hum)
    readings = make_sensor(fs, clock).read()
    assert all(r.quality == "unavailable" for r in readings)
    assert why in readings[0].reason
    assert_spaced(fs.temp_reads)


def test_dht22_accepts_the_range_limits(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11", temp="-40000", hum="0")
    assert values(make_sensor(fs, clock).read()) == {"temperature": -40.0, "humidity": 0.0}


def test_dht22_rejected_sample_is_retried(tmp_path: Path, clock: FakeClock) -> None:
    dev = add_device(tmp_path, 0, "dht11", temp="95000")

    class Healing(ScriptedSysfs):
        def read_text(self, path: str) -> str:
            text = super().read_text(path)
            if path.endswith("/in_temp_input"):
                set_values(dev, "21300")  # the next frame is clean
            return text

    fs = Healing(tmp_path, clock)
    readings = make_sensor(fs, clock).read()
    assert values(readings)["temperature"] == 21.3
    assert len(fs.temp_reads) == 2


def test_dht22_missing_device_is_unavailable_without_waiting(tmp_path: Path, fs: ScriptedSysfs,
                                                            clock: FakeClock) -> None:
    sensor = make_sensor(fs, clock)
    readings = sensor.read()  # no /sys/bus/iio at all
    assert [r.quantity for r in readings] == ["temperature", "humidity"]
    assert all(r.quality == "unavailable" for r in readings)
    assert "no IIO device named 'dht11'" in readings[0].reason
    add_device(tmp_path, 0, "mcp3008")
    assert "dtoverlay=dht11" in sensor.read()[0].reason
    assert clock.sleeps == [] and fs.temp_reads == []


def test_dht22_other_errors_fail_without_retry(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    fs.errors = [errno.EACCES]
    readings = make_sensor(fs, clock).read()
    assert readings[0].quality == "unavailable" and "Errno 13" in readings[0].reason
    assert len(fs.temp_reads) == 1


def test_dht22_logs_failure_once_and_recovery_once(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    sensor = make_sensor(fs, clock)
    with caplog.at_level(logging.INFO, logger="hal.dht22"):
        for _ in range(3):
            sensor.read()
            clock.t += 30
        add_device(tmp_path, 0, "dht11")
        sensor.read()
        clock.t += 30
        sensor.read()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(warnings) == 1 and len(recovered) == 1


def test_dht22_close_makes_reads_unavailable(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 0, "dht11")
    sensor = make_sensor(fs, clock)
    sensor.close()
    assert sensor.read()[0].reason == "sensor closed"


@pytest.mark.parametrize("kw", [{"device_name": ""}, {"min_interval": -1}, {"attempts": 0},
                                {"min_interval": "2"}])
def test_dht22_rejects_bad_parameters(fs: ScriptedSysfs, clock: FakeClock, kw: dict) -> None:
    with pytest.raises(HalConfigError):
        make_sensor(fs, clock, **kw)


def test_dht22_builds_from_the_sensor_table(tmp_path: Path, fs: ScriptedSysfs, clock: FakeClock) -> None:
    add_device(tmp_path, 4, "dht11")
    sensor = SENSOR_KINDS["dht22"].build(Ctx(fs, clock), "porch", {})  # type: ignore[arg-type]
    assert isinstance(sensor, Dht22Sensor)
    assert (sensor.kind, sensor.quantities) == ("dht22", ("temperature", "humidity"))
    assert sensor.min_interval == 2.0 and sensor.device_name == "dht11"
    assert [r.sensor for r in sensor.read()] == ["porch", "porch"]


def test_dht22_on_the_emulated_driver_keeps_the_chip_spacing(clock: FakeClock) -> None:
    room = RoomSimulator(seed=2)
    room.pin(temperature=19.96, humidity=55.0)
    fs = EmulatedSysfs(room, clock=clock, fault_rate=0.5, seed=5)
    sensor = make_sensor(fs, clock, attempts=5)
    ok = 0
    for _ in range(50):
        readings = sensor.read()
        if readings[0].ok:
            ok += 1
            assert values(readings) == {"temperature": 20.0, "humidity": 55.0}
        clock.t += 0.7  # reads faster than the chip allows, to stress the spacing
    assert ok >= 40
    assert_spaced([m.t for m in fs.history], 2.0)
