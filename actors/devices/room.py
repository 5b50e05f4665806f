"""`harvester.<node>.room`: the simulated room of a mock-mode node, from the REPL.

`fleet["pi4"]["room"].pin(temperature=35)` holds the room every emulated device of pi4 measures
(the DHT22's sysfs files, the BME680 and the other chips on the emulated I2C bus, the DS18B20
probes, the CPU thermal zone) at 35 °C, so the node's plugins, LEDs, buzzer and the hub's alerts
react as they would to a hot room. Only a mock-mode node has this actor: on real hardware there
is no room to pin.

`iaq` is not a room condition: the BME680's IAQ index is computed by the node's IAQ model
(hal.iaq) from gas resistance and humidity against a gas baseline that burn-in learns. Pinning
`iaq` pins the gas resistance that makes that model report the index, given the humidity (the
one pinned in the same call, else the room's now) and the baseline the sensor last saved in its
IAQ state file (`<state_dir>/iaq-<sensor>.json`, written at least once a minute and as soon as
burn-in completes). While a sensor is still in burn-in there is no baseline: pinning `iaq` is
refused with a clear error (its readings are 'calibrating' and would never alert anyway);
temperature and the rest can be pinned at any time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from actors.base import Actor, Arg, Bool, Number, remote
from hal.context import HalContext
from hal.emulated.environment import QUANTITY_NAMES, RoomSimulator
from hal.errors import HalConfigError
from hal.iaq import HUM_WEIGHTING, air_quality_score, iaq_index
from hal.readings import QUANTITIES

log = logging.getLogger(__name__)

IAQ = "iaq"
PINNABLE: tuple[str, ...] = (*QUANTITY_NAMES, IAQ)
# The gas resistances both emulated chips can report (BME680: 177 Ω..12.9 MΩ, BME688: 1.4 kΩ..
# 102 MΩ over their ADC codes and ranges); the quantity table's 0..1e9 Ω would let a pin be
# reported clamped, or divide by zero in the chip's code search.
GAS_PIN_RANGE = (1_500.0, 12_000_000.0)
BOUNDS: dict[str, tuple[float, float]] = {
    name: GAS_PIN_RANGE if name == "gas_resistance" else (QUANTITIES[name].low, QUANTITIES[name].high)
    for name in PINNABLE
}
GAS_WEIGHT = 100.0 - HUM_WEIGHTING * 100.0  # the gas share of hal.iaq's 0..100 score
IAQ_TOLERANCE = 0.05  # the model rounds its index to 0.1
CALIBRATING = "burn-in: its IAQ readings are 'calibrating' and never alert; iaq cannot be pinned until it ends"


def _known() -> str:
    return ", ".join(PINNABLE)


class RoomValues(Arg):
    """pin()'s keyword arguments: at least one, each a known name with a finite number in its range."""

    def describe(self) -> str:
        """What pin() accepts."""
        return f"one or more of {_known()} = a finite number"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Unused: check() gives the error for the one value that is wrong."""
        raise NotImplementedError

    def check(self, name: str, value: Any, error: type[Exception]) -> dict[str, float]:
        """The values as floats; `error` naming the first wrong one (nothing is pinned then)."""
        if not isinstance(value, dict) or not value:
            raise error(f"pin() needs at least one value, e.g. pin(temperature=35); known: {_known()}")
        out = {}
        for key, item in value.items():
            if key not in BOUNDS:
                raise error(f"unknown room quantity {key!r}; known: {_known()}")
            low, high = BOUNDS[key]
            ok, number = Number(low, high).accept(item)
            if not ok:
                unit = "Ω" if key == "gas_resistance" else QUANTITIES[key].unit
                hint = f"; release({key!r}) lets it drift again" if item is None else ""
                raise error(f"{key} must be a finite number in {low:g}..{high:g} {unit}, got {item!r}{hint}")
            out[key] = number
        return out


class RoomNames(Arg):
    """release()'s names: each a known quantity."""

    def describe(self) -> str:
        """What release() accepts."""
        return f"names among {_known()}"

    def accept(self, value: Any) -> tuple[bool, Any]:
        """Unused: check() gives the error for the one name that is wrong."""
        raise NotImplementedError

    def check(self, name: str, value: Any, error: type[Exception]) -> tuple[str, ...]:
        """The names; `error` naming the first unknown one (nothing is released then)."""
        for item in value:
            if not isinstance(item, str) or item not in BOUNDS:
                raise error(f"unknown room quantity {item!r}; known: {_known()}")
        return tuple(dict.fromkeys(value))


def caller() -> str:
    """Who is calling, for the log: the TLS identity, else the client's address."""
    from Pyro5.callcontext import current_context

    from nameserver.security import caller_identity

    identity = caller_identity()
    if identity is not None:
        return str(identity)
    conn = getattr(current_context, "client", None)
    addr = getattr(current_context, "client_sock_addr", None)
    if conn is not None and addr:
        return ":".join(str(part) for part in addr[:2]) if isinstance(addr, tuple) else str(addr)
    return "a local call"


def hum_score(humidity: float, baseline: float) -> float:
    """The humidity share of hal.iaq's score (0..25): the score of gas at the baseline, less its gas share."""
    return air_quality_score(baseline, humidity, baseline) - GAS_WEIGHT


def iaq_reach(humidity: float, baseline: float) -> tuple[float, float]:
    """The lowest and highest index a pinnable gas resistance gives at this humidity and baseline."""
    lowest = iaq_index(hum_score(humidity, baseline) + GAS_WEIGHT)
    highest = iaq_index(air_quality_score(min(GAS_PIN_RANGE[0], baseline), humidity, baseline))
    return lowest, highest


def gas_for_iaq(iaq: float, humidity: float, baseline: float) -> float:
    """The gas resistance (Ω) for which hal.iaq reports `iaq` at `humidity` against `baseline`.

    The model: score = humidity share (0..25) + gas share (gas / baseline * 75, 75 at or above the
    baseline), index = (100 - score) * 5. So gas = (100 - index / 5 - humidity share) / 75 * baseline.
    ValueError when the index is out of reach (too clean for the humidity, or past the lowest gas)."""
    lowest, highest = iaq_reach(humidity, baseline)
    if not lowest - IAQ_TOLERANCE <= iaq <= highest + IAQ_TOLERANCE:
        raise ValueError(
            f"iaq {iaq:g} is out of reach at {humidity:.1f} %RH against the gas baseline {baseline:.0f} Ω: "
            f"{lowest:.1f}..{highest:.1f} can be pinned (humidity away from 40 %RH raises both ends; "
            "pin humidity in the same call)")
    share = 100.0 - iaq / 5.0 - hum_score(humidity, baseline)
    gas = min(max(share, 0.0), GAS_WEIGHT) / GAS_WEIGHT * baseline
    gas = min(max(gas, GAS_PIN_RANGE[0]), GAS_PIN_RANGE[1])
    check = iaq_index(air_quality_score(gas, humidity, baseline))
    if abs(check - iaq) > IAQ_TOLERANCE:  # the inverse must agree with the model itself
        raise ValueError(f"iaq {iaq:g}: the IAQ model gives {check:.2f} for the gas resistance {gas:.0f} Ω")
    return gas


class RoomActor(Actor):
    """`harvester.<node>.room` (mock mode only): pin, release and inspect the simulated room."""

    kind = "room"

    def __init__(self, node: str, hal: HalContext, iaq_sensors: Iterable[str] = (), role: str = "spoke") -> None:
        if hal.mode != "mock":
            raise HalConfigError(f"{node}: the room actor exists only in mock mode, not {hal.mode!r}")
        super().__init__(node, "room", role)
        self.hal = hal
        self.room: RoomSimulator = hal.room
        self.iaq_sensors = tuple(iaq_sensors)
        # The last pin(iaq=...): {value, gas_resistance pinned for it, humidity and baselines then}.
        self._iaq: dict[str, Any] | None = None

    # -- the IAQ models of the node's BME680s, as their state files hold them -------------
    def _model(self, sensor: str) -> dict[str, Any]:
        """{baseline_gas, calibrating, note} for one sensor, from its saved IAQ state."""
        path = self.hal.state_dir / f"iaq-{sensor}.json"
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"baseline_gas": None, "calibrating": True,
                    "note": f"no IAQ state yet ({path.name}: the sensor has not read yet); " + CALIBRATING}
        except (OSError, ValueError) as exc:
            return {"baseline_gas": None, "calibrating": True, "note": f"cannot read {path.name}: {exc}"}
        baseline = state.get("baseline_gas") if isinstance(state, dict) else None
        if isinstance(baseline, (int, float)) and not isinstance(baseline, bool) and math.isfinite(baseline) \
                and baseline > 0:
            return {"baseline_gas": float(baseline), "calibrating": False, "note": None}
        count = state.get("burn_in_count", 0) if isinstance(state, dict) else 0
        return {"baseline_gas": None, "calibrating": True, "note": f"{CALIBRATING} ({count} readings so far)"}

    def _gas_for(self, iaq: float, humidity: float) -> tuple[float, dict[str, float]]:
        """The gas resistance for `iaq` on every IAQ sensor of the node, and their baselines."""
        error = self.argument_error
        if not self.iaq_sensors:
            raise error(f"{self.node} has no BME680 with an IAQ model: iaq cannot be pinned "
                        "(gas_resistance can)")
        baselines: dict[str, float] = {}
        for sensor in self.iaq_sensors:
            model = self._model(sensor)
            if model["baseline_gas"] is None:
                raise error(f"{self.object_name}: {sensor} has no IAQ baseline yet: {model['note']}")
            baselines[sensor] = model["baseline_gas"]
        gases = {}
        for sensor, baseline in baselines.items():
            try:
                gases[sensor] = gas_for_iaq(iaq, humidity, baseline)
            except ValueError as exc:
                raise error(f"{sensor}: {exc}") from None
        low, high = min(gases.values()), max(gases.values())
        if high > low * 1.01:  # one room, one gas resistance: the baselines must roughly agree
            raise error(f"iaq {iaq:g} needs a different gas resistance on each IAQ sensor ("
                        + ", ".join(f"{s}: {g:.0f} Ω" for s, g in gases.items())
                        + "); pin gas_resistance instead")
        return sum(gases.values()) / len(gases), baselines

    # -- remote ----------------------------------------------------------------------------
    @remote(values=RoomValues())
    def pin(self, **values: float) -> dict[str, Any]:
        """Hold room quantities at fixed values, e.g. pin(temperature=35, humidity=60); returns state().

        Names: temperature (°C), humidity (%RH), pressure (hPa), gas_resistance (Ω), co2 (ppm),
        illuminance (lx), soil_moisture (%), cpu_temperature (°C) and iaq (index, 0 best, 500 worst).
        Each value must be a finite number in the quantity's plausible range; a wrong one refuses
        the whole call and nothing changes. Every emulated device of the node measures the pinned
        room, each within its own range (the DHT22 reports at most 80 °C).

        iaq pins the gas resistance that makes the node's IAQ model (hal.iaq) report that index at
        the humidity (pinned in this call, else the room's now) against the BME680's saved gas
        baseline; the humidity drifts unless pinned too (about 3 index points per %RH). While a
        BME680 is in burn-in it has no baseline and iaq is refused: its IAQ readings are
        'calibrating' then, and a calibrating reading never fires an alert."""
        if not values:  # no keyword at all never reaches the argument check
            raise self.argument_error(f"pin() needs at least one value, e.g. pin(temperature=35); known: {_known()}")
        values = dict(values)
        iaq_target = values.pop(IAQ, None)
        record = None
        if iaq_target is not None:
            if "gas_resistance" in values:
                raise self.argument_error("pin iaq or gas_resistance, not both: iaq sets the gas resistance")
            humidity = values.get("humidity", self.room.at(self.hal.clock()).humidity)
            gas, baselines = self._gas_for(iaq_target, humidity)
            values["gas_resistance"] = gas
            record = {"value": iaq_target, "gas_resistance": gas, "humidity": humidity, "baselines": baselines}
        self.room.pin(**values)
        if "gas_resistance" in values:
            self._iaq = record  # a gas_resistance of its own replaces an earlier iaq
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items() if not (record and k == "gas_resistance"))
        if record:
            iaq_text = (f"iaq={iaq_target:g} (gas_resistance={record['gas_resistance']:.0f} Ω at "
                        f"{record['humidity']:.1f} %RH)")
            shown = f"{shown}, {iaq_text}" if shown else iaq_text
        log.info("room pinned by %s: %s", caller(), shown)
        return self._state()

    @remote(names=RoomNames())
    def release(self, *names: str) -> dict[str, Any]:
        """Let the named quantities drift again (no names: all of them); releasing iaq releases the
        gas resistance it pinned. An unknown name refuses the whole call. Returns state()."""
        targets = tuple("gas_resistance" if n == IAQ else n for n in names)
        held_iaq = self._iaq is not None and self.room.pinned().get("gas_resistance") == self._iaq["gas_resistance"]
        released = self.room.release(*targets)
        if not names or "gas_resistance" in targets:
            self._iaq = None
        if released:
            shown = [f"{IAQ} (its gas_resistance)" if k == "gas_resistance" and held_iaq else k for k in released]
            log.info("room released by %s: %s", caller(), ", ".join(shown))
        return self._state()

    @remote(synced=Bool())
    def set_clock(self, synced: bool) -> dict[str, Any]:
        """Emulate the kernel's NTP state (mock mode's adjtimex): set_clock(False) is a board that
        booted without a real-time clock, before NTP syncs: `harvester health` says so, the spoke
        holds its readings in its outbox and the hub flags it. set_clock(True) syncs it: the held
        readings go to the hub. The host's wall clock does not step, so their stamps stay as they
        were. Returns state()."""
        self.hal.kernel_clock().set_synced(synced)
        log.info("emulated clock %s by %s", "synchronised" if synced else "unsynchronised", caller())
        return self._state()

    @remote
    def state(self) -> dict[str, Any]:
        """What is pinned, the room's conditions now, and each BME680's IAQ model: its gas baseline
        and the index it would report now, or, during burn-in, that its readings are 'calibrating'
        and never alert."""
        return self._state()

    def _state(self) -> dict[str, Any]:
        now = self.hal.clock()
        cond = self.room.at(now)
        pinned = self.room.pinned()
        record = self._iaq
        if record is not None and pinned.get("gas_resistance") != record["gas_resistance"]:
            record = self._iaq = None  # pinned or released through the HAL since
        if record is not None:
            pinned[IAQ] = record["value"]
        models = {}
        for sensor in self.iaq_sensors:
            model = self._model(sensor)
            baseline = model["baseline_gas"]
            model["iaq"] = None if baseline is None else \
                round(iaq_index(air_quality_score(cond.gas_resistance, cond.humidity, baseline)), 1)
            models[sensor] = model
        notes = [f"{s}: {m['note']}" for s, m in models.items() if m["note"]]
        if record is not None:
            notes.append(f"iaq {record['value']:g} is held as gas_resistance {record['gas_resistance']:.0f} Ω, "
                         f"computed at {record['humidity']:.1f} %RH"
                         + ("" if "humidity" in pinned else "; humidity drifts, so the index does too"))
        return {"node": self.node, "ts": now, "pinned": pinned, "conditions": asdict(cond),
                "iaq_models": models, "clock": self.hal.kernel_clock().status().to_dict(), "notes": notes}
