"""The room actor: pin/release/state over the simulated room, its argument checks (all or nothing),
and `iaq` translated into a gas resistance through the node's real IAQ model."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from actors.devices.room import BOUNDS, GAS_PIN_RANGE, PINNABLE, RoomActor, gas_for_iaq, iaq_reach
from actors.errors import BadRequest
from hal.bme680 import gas_resistance_bme680, gas_resistance_bme688
from hal.bme680_sensor import Bme680Sensor
from hal.context import HalContext
from hal.emulated.bme680_chip import PIMORONI_CALIBRATION
from hal.emulated.environment import QUANTITY_NAMES, RoomSimulator
from hal.errors import HalConfigError
from hal.iaq import IaqEstimator, air_quality_score, iaq_index
from hal.readings import QUANTITIES
from tests.clocks import ManualClock
from tests.unit.hal_fakes import FakeClock, by_quantity

KNOWN = ", ".join(PINNABLE)


@pytest.fixture
def ctx(tmp_path: Path) -> HalContext:
    return HalContext("mock", "pi4", tmp_path, clock=ManualClock())


@pytest.fixture
def room(ctx: HalContext) -> RoomActor:
    return RoomActor("pi4", ctx)


def burned_in(state_dir: Path, clock: ManualClock, baseline: float = 150_000.0) -> IaqEstimator:
    """A real IAQ model that has finished burn-in on `baseline` Ω and saves its state at every update,
    where a BME680 sensor named bme680 keeps it."""
    est = IaqEstimator(state_dir / "iaq-bme680.json", clock=clock, save_interval_s=0.0)
    for _ in range(31):
        est.update(baseline, 40.0)
        clock.advance(10.0)
    assert est.calibrated and est.baseline_gas == pytest.approx(baseline)
    return est


# -- validation: a refused call changes nothing ------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"bogus": 1.0}, f"unknown room quantity 'bogus'; known: {KNOWN}"),
    ({"Temperature": 30.0}, "unknown room quantity 'Temperature'"),
    ({"temperature": math.nan}, "temperature must be a finite number in -55..125 °C, got nan"),
    ({"temperature": math.inf}, "got inf"),
    ({"humidity": -math.inf}, "humidity must be a finite number in 0..100 %"),
    ({"humidity": 100.5}, "humidity must be a finite number in 0..100 %, got 100.5"),
    ({"temperature": -60}, "in -55..125 °C, got -60"),
    ({"co2": 40_001}, "co2 must be a finite number in 0..40000 ppm"),
    ({"gas_resistance": 0.0}, "gas_resistance must be a finite number in 1500..1.2e+07 Ω"),
    ({"iaq": 501}, "iaq must be a finite number in 0..500 IAQ"),
    ({"temperature": "35"}, "got '35'"),
    ({"temperature": True}, "got True"),
    ({"temperature": [35]}, "got [35]"),
    ({"temperature": None}, "release('temperature') lets it drift again"),
    ({"temperature": 10**400}, "temperature must be a finite number"),
    ({}, "pin() needs at least one value, e.g. pin(temperature=35)"),
])
def test_bad_pins_are_refused_clearly_and_change_nothing(room: RoomActor, values: dict[str, Any],
                                                         message: str) -> None:
    room.pin(temperature=30.0, co2=800)
    before, refused = room.room.pinned(), room.health()["refused"]
    with pytest.raises(BadRequest) as info:
        room.pin(**values)
    assert message in str(info.value)
    assert room.room.pinned() == before == {"temperature": 30.0, "co2": 800.0}
    health = room.health()
    assert health["refused"] == refused + 1 and health["errors"] == 0  # the caller's mistake, not the actor's


def test_a_call_is_all_or_nothing(room: RoomActor) -> None:
    room.pin(temperature=30.0)
    for bad in ({"temperature": 35.0, "humidity": 150.0}, {"humidity": 50.0, "bogus": 1.0},
                {"temperature": 35.0, "humidity": math.nan}, {"co2": 900.0, "iaq": 100.0}):  # no IAQ sensor here
        with pytest.raises(BadRequest):
            room.pin(**bad)
        assert room.room.pinned() == {"temperature": 30.0}, bad
    with pytest.raises(BadRequest, match="unknown room quantity 'bogus'"):
        room.release("humidity", "bogus")
    assert room.room.pinned() == {"temperature": 30.0}


def test_positional_and_unknown_arguments_are_refused(room: RoomActor) -> None:
    with pytest.raises(BadRequest, match=r"pin\(\): too many positional arguments"):
        room.pin(35)
    with pytest.raises(BadRequest, match=f"unknown room quantity 7; known: {KNOWN}"):
        room.release(7)
    with pytest.raises(BadRequest, match=r"state\(\): too many positional arguments"):
        room.state(1)
    assert room.room.pinned() == {}


def test_bounds_are_the_quantity_table_and_the_chips_gas_range() -> None:
    assert set(BOUNDS) == {*QUANTITY_NAMES, "iaq"} == set(PINNABLE)
    for name, (low, high) in BOUNDS.items():
        if name != "gas_resistance":
            assert (low, high) == (QUANTITIES[name].low, QUANTITIES[name].high)
    # every pinnable gas resistance is one both emulated chips can report, not a clamped one
    bme680 = [gas_resistance_bme680(adc, r, PIMORONI_CALIBRATION) for r in range(16) for adc in range(1024)]
    bme688 = [gas_resistance_bme688(adc, r) for r in range(16) for adc in range(1024)]
    for values in (bme680, bme688):
        assert min(values) <= GAS_PIN_RANGE[0] and max(values) >= GAS_PIN_RANGE[1]


def test_the_room_simulator_itself_is_all_or_nothing() -> None:
    sim = RoomSimulator()
    sim.pin(temperature=30.0)
    with pytest.raises(KeyError, match="unknown room quantity 'bogus'"):
        sim.pin(humidity=50.0, bogus=1.0)
    with pytest.raises(ValueError):
        sim.pin(humidity=50.0, co2="lots")
    with pytest.raises(KeyError):
        sim.release("temperature", "bogus")
    assert sim.pinned() == {"temperature": 30.0}
    sim.pin(temperature=None)  # None still releases one, as before
    assert sim.pinned() == {}


def test_only_a_mock_context_has_a_room(tmp_path: Path) -> None:
    with pytest.raises(HalConfigError, match="only in mock mode"):
        RoomActor("pi4", HalContext("real", "pi4", tmp_path))


# -- pin, release, state -----------------------------------------------------------------------

def test_pins_drive_the_conditions_and_release_one_or_all(room: RoomActor, ctx: HalContext) -> None:
    free = RoomSimulator(seed=ctx.mock.room_seed).at(ctx.clock())
    state = room.pin(temperature=35, humidity=61.5, co2=1500.0, illuminance=0)
    assert state["pinned"] == {"temperature": 35.0, "humidity": 61.5, "co2": 1500.0, "illuminance": 0.0}
    assert {k: state["conditions"][k] for k in state["pinned"]} == state["pinned"]
    assert state["conditions"]["pressure"] == free.pressure  # what is not pinned drifts as before
    assert ctx.room.at(ctx.clock()).temperature == 35.0  # the room every emulated device measures

    state = room.release("humidity")
    assert state["pinned"] == {"temperature": 35.0, "co2": 1500.0, "illuminance": 0.0}
    assert state["conditions"]["humidity"] == free.humidity
    assert room.release("humidity")["pinned"] == state["pinned"]  # releasing a free one is no error
    state = room.release()
    assert state["pinned"] == {} and state["conditions"] == room.state()["conditions"]
    assert state["conditions"]["temperature"] == free.temperature


def test_state_shows_pins_conditions_and_is_plain_data(room: RoomActor, ctx: HalContext) -> None:
    room.pin(soil_moisture=12.5)
    state = room.state()
    assert state["node"] == "pi4" and state["ts"] == ctx.clock()
    assert list(state["conditions"]) == list(QUANTITY_NAMES)
    assert state["pinned"] == {"soil_moisture": 12.5} and state["iaq_models"] == {} and state["notes"] == []
    ctx.room.pin(temperature=20.0)  # pinned through the HAL, as the older tests do: shown too
    assert room.state()["pinned"] == {"soil_moisture": 12.5, "temperature": 20.0}


def test_every_pin_is_logged_once_at_info(room: RoomActor, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="actors.devices.room"):
        room.pin(temperature=35)
        room.pin(humidity=55.5, co2=1200)
        with pytest.raises(BadRequest):
            room.pin(temperature=math.nan)
        room.release("co2")
    assert [r.getMessage() for r in caplog.records] == [
        "room pinned by a local call: temperature=35",
        "room pinned by a local call: humidity=55.5, co2=1200",
        "room released by a local call: co2",
    ]
    assert {r.levelno for r in caplog.records} == {logging.INFO}


# -- iaq: through the node's IAQ model ---------------------------------------------------------

@pytest.mark.parametrize("humidity", [0.0, 20.0, 40.0, 45.5, 70.0, 100.0])
@pytest.mark.parametrize("baseline", [40_000.0, 150_000.0, 2_000_000.0])
def test_gas_for_iaq_inverts_the_model(humidity: float, baseline: float) -> None:
    lowest, highest = iaq_reach(humidity, baseline)
    assert 0.0 <= lowest < highest <= 500.0
    for target in (lowest, *(lowest + (highest - lowest) * f for f in (0.01, 0.25, 0.5, 0.9, 0.999)), highest):
        gas = gas_for_iaq(target, humidity, baseline)
        assert GAS_PIN_RANGE[0] <= gas <= baseline
        assert iaq_index(air_quality_score(gas, humidity, baseline)) == pytest.approx(target, abs=0.05)
    for target in (lowest - 1.0, highest + 1.0):
        if 0.0 <= target <= 500.0:
            with pytest.raises(ValueError, match=f"{lowest:.1f}..{highest:.1f} can be pinned"):
                gas_for_iaq(target, humidity, baseline)


def test_iaq_round_trips_through_the_real_iaq_model(tmp_path: Path) -> None:
    clock = ManualClock()
    ctx = HalContext("mock", "pi4", tmp_path, clock=clock)
    est = burned_in(tmp_path, clock)
    room = RoomActor("pi4", ctx, ["bme680"])
    for target in (25.0, 80.0, 151.0, 200.0, 250.0, 320.0):
        state = room.pin(iaq=target, humidity=45.0)
        assert state["pinned"]["iaq"] == target and state["pinned"]["humidity"] == 45.0
        cond = ctx.room.at(clock())
        result = est.update(cond.gas_resistance, cond.humidity)  # what the BME680 sensor does with a reading
        assert result.quality == "ok" and result.score == pytest.approx(target, abs=0.1)
        assert state["iaq_models"]["bme680"]["iaq"] == pytest.approx(target, abs=0.1)
    # without a humidity of its own, the room's humidity now is used
    room.release("humidity")
    humidity_now = ctx.room.at(clock()).humidity
    room.pin(iaq=120.0)
    cond = ctx.room.at(clock())
    assert cond.humidity == humidity_now
    assert est.update(cond.gas_resistance, cond.humidity).score == pytest.approx(120.0, abs=0.1)
    assert any("humidity drifts" in note for note in room.state()["notes"])


def test_iaq_round_trips_through_the_emulated_bme680(tmp_path: Path) -> None:
    """The whole chain a node runs: room -> emulated chip -> driver -> Bme680Sensor -> its IAQ model."""
    clock = FakeClock()
    ctx = HalContext("mock", "pi4", tmp_path, clock=clock, sleep=clock.sleep)
    sensor = Bme680Sensor(ctx, "bme680", sleep=clock.sleep)
    room = RoomActor("pi4", ctx, ["bme680"])
    readings = by_quantity(sensor.read())
    assert readings["iaq"].quality == "calibrating"
    with pytest.raises(BadRequest, match="bme680 has no IAQ baseline yet: burn-in: its IAQ readings are "
                                         "'calibrating' and never alert; iaq cannot be pinned until it ends"):
        room.pin(iaq=200.0, temperature=31.0)
    assert ctx.room.pinned() == {}
    model = room.state()["iaq_models"]["bme680"]
    assert model["calibrating"] and model["baseline_gas"] is None and "never alert" in model["note"]
    while readings["iaq"].quality == "calibrating":
        clock.advance(10.0)
        readings = by_quantity(sensor.read())
    assert not room.state()["iaq_models"]["bme680"]["calibrating"]
    for target in (60.0, 175.0, 260.0):
        room.pin(iaq=target)
        clock.advance(1.0)
        iaq = by_quantity(sensor.read())["iaq"]
        assert iaq.quality == "ok" and iaq.value == pytest.approx(target, abs=1.0)
    sensor.close()


def test_iaq_release_and_gas_pins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    ctx = HalContext("mock", "pi4", tmp_path, clock=clock)
    burned_in(tmp_path, clock)
    room = RoomActor("pi4", ctx, ["bme680"])
    with caplog.at_level(logging.INFO, logger="actors.devices.room"):
        state = room.pin(iaq=200.0, temperature=25.0)
    gas = state["pinned"]["gas_resistance"]
    assert state["pinned"] == {"temperature": 25.0, "gas_resistance": gas, "iaq": 200.0}
    assert [r.getMessage() for r in caplog.records] == [
        f"room pinned by a local call: temperature=25, iaq=200 (gas_resistance={gas:.0f} Ω at "
        f"{ctx.room.at(clock()).humidity:.1f} %RH)"]
    with pytest.raises(BadRequest, match="pin iaq or gas_resistance, not both"):
        room.pin(iaq=100.0, gas_resistance=50_000.0)
    with pytest.raises(BadRequest, match=r"iaq 490 is out of reach at 40\.0 %RH against the gas baseline 150000 Ω"):
        room.pin(iaq=490.0, humidity=40.0)
    assert room.state()["pinned"] == state["pinned"]
    assert room.release("iaq")["pinned"] == {"temperature": 25.0}
    room.pin(iaq=100.0)
    assert room.pin(gas_resistance=90_000.0)["pinned"] == {"temperature": 25.0, "gas_resistance": 90_000.0}
    room.pin(iaq=100.0)
    assert "iaq" not in room.release()["pinned"]


def test_iaq_needs_an_iaq_sensor_with_a_baseline(tmp_path: Path) -> None:
    ctx = HalContext("mock", "pi4", tmp_path, clock=ManualClock())
    with pytest.raises(BadRequest, match="pi4 has no BME680 with an IAQ model: iaq cannot be pinned"):
        RoomActor("pi4", ctx).pin(iaq=100.0)
    room = RoomActor("pi4", ctx, ["bme680"])
    IaqEstimator(tmp_path / "iaq-bme680.json", clock=ctx.clock, save_interval_s=0.0).update(1e5, 40.0)
    with pytest.raises(BadRequest, match=r"burn-in: .*never alert.*\(1 readings so far\)"):
        room.pin(iaq=100.0)
    assert room.state()["notes"] == [f"bme680: {room.state()['iaq_models']['bme680']['note']}"]
