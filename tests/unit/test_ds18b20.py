"""DS18B20 through w1-therm: scratchpad decoding, the CRC, every fault, and the emulated probe."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.context import HalContext
from hal.crc import dallas_crc8
from hal.ds18b20 import (
    Ds18b20Sensor,
    W1Slave,
    check_reading,
    decode_temperature,
    kernel_millidegrees,
    parse_w1_slave,
    resolution_bits,
)
from hal.emulated.environment import RoomSimulator
from hal.emulated.w1 import DEFAULT_ID, EmulatedDs18b20, w1_master
from hal.errors import DeviceUnavailable, HalConfigError, ImplausibleValue
from hal.sensor import SENSOR_KINDS
from hal.sysfs import SysfsRoot
from tests.clocks import ManualClock
from tests.unit.hal_fakes import (
    NODE,
    assert_warned_once_and_recovered_once,
    mock_context,
    one,
    read_through_kaboom,
)

PROBE = "28-00000a1b2c3d"
DEVICES = "/sys/bus/w1/devices"
# The sample of the brief and of countless tutorials: 0x0172 = 370/16 = 23.125 °C, 12 bit.
SAMPLE = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
# What a probe with a broken data line gives: every bit 1, the computed CRC c9, "NO".
DISCONNECTED = "ff ff ff ff ff ff ff ff ff : crc=c9 NO\n72 01 4b 46 7f ff 0e 10 57 t=-62\n"
POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"

# Maxim DS18B20 datasheet, table 1 "Temperature/Data Relationship" (12-bit).
DATASHEET = [(125.0, 0x07D0), (85.0, 0x0550), (25.0625, 0x0191), (10.125, 0x00A2), (0.5, 0x0008),
             (0.0, 0x0000), (-0.5, 0xFFF8), (-10.125, 0xFF5E), (-25.0625, 0xFE6F), (-55.0, 0xFC90)]


def scratchpad(raw: int, config: int = 0x7F) -> bytes:
    data = bytes([raw & 0xFF, (raw >> 8) & 0xFF, 0x4B, 0x46, config, 0xFF, (0x10 - (raw & 0x0F)) & 0xFF, 0x10])
    return data + bytes([dallas_crc8(data)])


def w1_text(pad: bytes, verdict: str | None = None, t: int | None = None) -> str:
    """w1_slave as the kernel prints it (the CRC it shows is computed over the first 8 bytes)."""
    crc = dallas_crc8(pad[:8])
    verdict = verdict or ("YES" if crc == pad[8] else "NO")
    hexes = " ".join(f"{b:02x}" for b in pad)
    return f"{hexes} : crc={crc:02x} {verdict}\n{hexes} t={kernel_millidegrees(pad) if t is None else t}\n"


class Ctx:
    def __init__(self, fs: SysfsRoot) -> None:
        self.node = NODE
        self.clock = ManualClock()
        self.fs = fs

    def sysfs(self) -> SysfsRoot:
        return self.fs


def tree(tmp_path: Path, probes: dict[str, str]) -> Ctx:
    """A sysfs tree with a w1 bus master and a w1_slave per probe id."""
    devices = tmp_path / DEVICES.lstrip("/")
    (devices / "w1_bus_master1").mkdir(parents=True, exist_ok=True)
    for device, text in probes.items():
        (devices / device).mkdir(exist_ok=True)
        (devices / device / "w1_slave").write_text(text)
    return Ctx(SysfsRoot(tmp_path))


def only(readings: list) -> object:
    return one(readings, quantity="temperature", node=NODE)


# -- decoding --------------------------------------------------------------------------

@pytest.mark.parametrize(("celsius", "raw"), DATASHEET)
def test_datasheet_table_decodes(celsius: float, raw: int) -> None:
    pad = scratchpad(raw)
    assert decode_temperature(pad) == celsius
    assert kernel_millidegrees(pad) == round(celsius * 1000)


@pytest.mark.parametrize(("celsius", "raw"), DATASHEET)
def test_emulated_probe_encodes_the_datasheet_table(celsius: float, raw: int) -> None:
    probe = EmulatedDs18b20(PROBE, RoomSimulator())
    pad = probe.scratchpad(celsius)
    assert pad[:2] == raw.to_bytes(2, "little") and dallas_crc8(pad) == 0


def test_dallas_crc_vector_of_the_sample() -> None:
    pad = bytes.fromhex("72014b467fff0e1057")
    assert dallas_crc8(pad[:8]) == 0x57 and dallas_crc8(pad) == 0


def test_real_sample_parses_and_checks() -> None:
    slave = parse_w1_slave(SAMPLE)
    assert slave == W1Slave(bytes.fromhex("72014b467fff0e1057"), True, 23125)
    assert check_reading(slave) == 23.125


@pytest.mark.parametrize(("config", "bits", "celsius"), [(0x1F, 9, 23.0), (0x3F, 10, 23.25),
                                                         (0x5F, 11, 23.375), (0x7F, 12, 23.4375)])
def test_resolution_masks_the_undefined_low_bits(config: int, bits: int, celsius: float) -> None:
    pad = scratchpad(0x0177, config)  # 23.4375 with every low bit set
    assert resolution_bits(config) == bits
    assert decode_temperature(pad) == celsius
    # The kernel does not mask: t= stays 23437 whatever the resolution, and still cross-checks.
    assert check_reading(parse_w1_slave(w1_text(pad))) == celsius


def test_negative_values_mask_towards_minus_infinity() -> None:
    # -10.125 (0xFF5E) at 9 bit: the bits below 0.5 °C are undefined, the register says -10.5.
    assert decode_temperature(scratchpad(0xFF5E, 0x1F)) == -10.5
    assert kernel_millidegrees(scratchpad(0xFFFF)) == -62  # C truncates -62.5 towards zero


# -- faults as the kernel shows them ---------------------------------------------------

@pytest.mark.parametrize(("text", "reason"), [
    (w1_text(scratchpad(0x0172), verdict="NO"), "CRC error"),  # the kernel's verdict alone
    (SAMPLE.replace("72 01 4b", "73 01 4b", 1), "CRC error"),  # a byte the kernel said YES to, changed
    (DISCONNECTED, "CRC error"),
    (w1_text(bytes(9)), "all zeros"),  # passes the CRC: zeros have CRC 0
    (POWER_ON, "85 °C power-on value"),
    (w1_text(scratchpad(0x0172), t=23000), "disagrees"),
    ("", "empty"),
    ("garbage\n", "unreadable w1_slave"),
    (w1_text(scratchpad(0x0172, config=0xFF)), "not a DS18B20"),
])
def test_bad_w1_slave_is_an_unavailable_reading(tmp_path: Path, text: str, reason: str) -> None:
    ctx = tree(tmp_path, {PROBE: text})
    r = only(Ds18b20Sensor(ctx, "probe", device=PROBE).read())
    assert r.quality == "unavailable" and r.value is None and reason in r.reason


def test_parse_errors_have_the_right_types() -> None:
    with pytest.raises(DeviceUnavailable):
        parse_w1_slave("\n")
    with pytest.raises(ImplausibleValue):
        parse_w1_slave(SAMPLE.splitlines()[0])


def test_good_file_gives_the_temperature(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {PROBE: SAMPLE})
    r = only(Ds18b20Sensor(ctx, "probe", device=PROBE).read())
    assert r.ok and r.value == 23.125 and r.unit == "°C" and r.ts == ctx.clock.t


def test_missing_probe_names_its_id_and_the_ones_present(tmp_path: Path) -> None:
    other = "28-0000000000ff"
    ctx = tree(tmp_path, {other: SAMPLE})
    r = only(Ds18b20Sensor(ctx, "probe", device=PROBE).read())
    assert r.quality == "unavailable" and PROBE in r.reason and "unplugged" in r.reason and other in r.reason


def test_no_w1_bus_says_how_to_enable_it(tmp_path: Path) -> None:
    r = only(Ds18b20Sensor(Ctx(SysfsRoot(tmp_path)), "probe").read())
    assert "no 1-wire bus" in r.reason and "w1-gpio" in r.reason


def test_first_probe_is_the_first_sorted_and_none_is_said(tmp_path: Path) -> None:
    ctx = tree(tmp_path, {})
    sensor = Ds18b20Sensor(ctx, "probe")
    assert "no DS18B20 (28-*)" in only(sensor.read()).reason and sensor.device_id is None
    second = scratchpad(0x0191)  # 25.0625
    tree(tmp_path, {"28-0000000000b2": w1_text(second), "28-0000000000a1": SAMPLE})
    (tmp_path / DEVICES.lstrip("/") / "10-000000000001").mkdir()  # a DS18S20 is not taken
    assert only(sensor.read()).value == 23.125 and sensor.device_id == "28-0000000000a1"


def test_the_probes_whole_range_is_a_plausible_temperature(tmp_path: Path) -> None:
    for raw, celsius in ((0x07D0, 125.0), (0xFC90, -55.0)):
        ctx = tree(tmp_path, {PROBE: w1_text(scratchpad(raw))})
        r = only(Ds18b20Sensor(ctx, "probe", device=PROBE).read())
        assert r.quality == "ok" and r.value == celsius


def test_unexpected_errors_and_close_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sensor, readings = read_through_kaboom(tree(tmp_path, {PROBE: SAMPLE}), lambda ctx: Ds18b20Sensor(ctx, "probe"),
                                           caplog, "hal.ds18b20", method="sysfs")
    only(readings)
    sensor.close()
    assert only(sensor.read()).reason == "sensor closed"


@pytest.mark.parametrize("device", ["28-00000A1B2C3D", "10-00000a1b2c3d", "28-0a1b", 28])
def test_bad_device_id_is_refused(tmp_path: Path, device: object) -> None:
    with pytest.raises(HalConfigError):
        Ds18b20Sensor(tree(tmp_path, {}), "probe", device=device)  # type: ignore[arg-type]


# -- mock mode: the real driver on the emulated w1 bus ---------------------------------

@pytest.fixture
def mock(tmp_path: Path) -> Iterator[HalContext]:
    ctx, _ = mock_context(tmp_path, temperature=21.3)
    yield ctx
    ctx.close()


def test_mock_mode_builds_and_reads_the_room(mock: HalContext) -> None:
    sensor = SENSOR_KINDS["ds18b20"].build(mock, "probe", {})
    assert isinstance(sensor, Ds18b20Sensor) and (sensor.kind, sensor.quantities) == ("ds18b20", ("temperature",))
    r = only(sensor.read())
    assert r.ok and r.value == 21.3125  # the nearest 1/16 °C
    assert sensor.device_id == DEFAULT_ID
    fs = mock.sysfs()
    assert fs.glob(f"{DEVICES}/28-*") == [f"{DEVICES}/{DEFAULT_ID}"]
    assert fs.read_text(f"{DEVICES}/w1_bus_master1/w1_master_slaves") == f"{DEFAULT_ID}\n"
    text = fs.read_text(f"{DEVICES}/{DEFAULT_ID}/w1_slave")
    assert check_reading(parse_w1_slave(text)) == 21.3125


def test_mock_mode_places_the_configured_probe_and_keeps_one_master(mock: HalContext) -> None:
    SENSOR_KINDS["ds18b20"].build(mock, "first", {})
    sensor = SENSOR_KINDS["ds18b20"].build(mock, "tank", {"device": "28-0000000000aa"})
    assert only(sensor.read()).value == 21.3125
    assert w1_master(mock.sysfs()).ids() == ["28-0000000000aa", DEFAULT_ID]
    # A sensor on the first probe, built after a probe is there, adds none.
    SENSOR_KINDS["ds18b20"].build(mock, "again", {})
    assert len(w1_master(mock.sysfs()).ids()) == 2


def test_mock_mode_faults_end_as_readings_logged_once(mock: HalContext, caplog: pytest.LogCaptureFixture) -> None:
    sensor = SENSOR_KINDS["ds18b20"].build(mock, "probe", {})
    probe = w1_master(mock.sysfs()).probe(DEFAULT_ID)
    with caplog.at_level(logging.INFO, logger="hal.ds18b20"):
        probe.fail_next("crc")
        assert "CRC error" in only(sensor.read()).reason
        probe.fail_next("power_on")
        assert "85 °C power-on value" in only(sensor.read()).reason
        probe.fail_next("zeros")
        assert "all zeros" in only(sensor.read()).reason
        probe.fail_next("empty")
        assert "empty" in only(sensor.read()).reason
        w1_master(mock.sysfs()).unplug(DEFAULT_ID)
        assert "no DS18B20" in only(sensor.read()).reason
        w1_master(mock.sysfs()).plug(DEFAULT_ID)
        assert only(sensor.read()).ok
    assert_warned_once_and_recovered_once(caplog)
    assert [c.outcome for c in probe.history] == ["crc", "power_on", "zeros", "empty", "ok"]


def test_mock_mode_configured_probe_unplugged_is_named(mock: HalContext) -> None:
    sensor = SENSOR_KINDS["ds18b20"].build(mock, "probe", {"device": PROBE})
    w1_master(mock.sysfs()).unplug(PROBE)
    r = only(sensor.read())
    assert r.quality == "unavailable" and f"1-wire probe {PROBE} not found" in r.reason


def test_emulated_crc_errors_at_a_rate(mock: HalContext) -> None:
    sensor = SENSOR_KINDS["ds18b20"].build(mock, "probe", {})
    w1_master(mock.sysfs()).probe(DEFAULT_ID).crc_error_rate = 1.0
    assert all("CRC error" in only(sensor.read()).reason for _ in range(20))


def test_emulated_low_resolution_has_undefined_bits_the_driver_masks(mock: HalContext) -> None:
    sensor = SENSOR_KINDS["ds18b20"].build(mock, "probe", {})
    probe = w1_master(mock.sysfs()).probe(DEFAULT_ID)
    probe.resolution = 9
    values = set()
    for i in range(20):
        mock.room.pin(temperature=20.0 + i * 0.07)
        values.add(only(sensor.read()).value)
    assert all(v * 2 == int(v * 2) for v in values)  # 0.5 °C steps
    junk = [c.text for c in probe.history if not c.text.split("t=")[1].strip().endswith(("000", "500"))]
    assert junk  # the kernel's t= shows the undefined bits the driver masked


def test_emulated_probe_in_soil_lags_the_air(tmp_path: Path) -> None:
    clock = ManualClock()
    room = RoomSimulator()
    room.pin(temperature=10.0)
    probe = EmulatedDs18b20(PROBE, room, clock=clock, lag_s=600.0)
    assert check_reading(parse_w1_slave(probe.w1_slave())) == 10.0
    room.pin(temperature=20.0)
    clock.advance(600.0)  # one time constant: 63 % of the step
    assert check_reading(parse_w1_slave(probe.w1_slave())) == pytest.approx(16.32, abs=0.07)


def test_emulated_w1_tree_hides_the_machines_own(tmp_path: Path) -> None:
    from hal.emulated.sysfs import EmulatedSysfs

    real = tmp_path / "sys/bus/w1/devices/28-00000000beef"
    real.mkdir(parents=True)
    (real / "w1_slave").write_text(SAMPLE)
    fs = EmulatedSysfs(RoomSimulator(), clock=ManualClock(), overlay_base=tmp_path)
    assert fs.glob(f"{DEVICES}/28-*") == [str(real).replace(str(tmp_path), "")]
    master = w1_master(fs)
    master.add_probe(PROBE)
    assert fs.listdir(DEVICES) == [PROBE, "w1_bus_master1"]
    assert fs.is_dir(f"{DEVICES}/{PROBE}") and not fs.exists(f"{DEVICES}/28-00000000beef")
    assert fs.read_text(f"{DEVICES}/{PROBE}/name") == f"{PROBE}\n"
    assert fs.read_text(f"{DEVICES}/{PROBE}/resolution") == "12\n"
    master.unplug(PROBE)
    assert fs.glob(f"{DEVICES}/28-*") == []
    assert fs.read_text(f"{DEVICES}/w1_bus_master1/w1_master_slaves") == "not found.\n"
    with pytest.raises(FileNotFoundError):
        fs.read_text(f"{DEVICES}/{PROBE}/w1_slave")
    assert "iio" in fs.listdir("/sys/bus") and "w1" in fs.listdir("/sys/bus")
