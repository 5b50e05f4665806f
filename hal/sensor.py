"""The sensor interface and the table of sensor kinds a node config may declare."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hal.errors import HalConfigError
from hal.schema import between, one_of, rule

if TYPE_CHECKING:
    from hal.context import HalContext
    from hal.readings import Reading


class Sensor(Protocol):
    """A device that yields readings; `read()` never raises, failures become readings."""

    name: str
    kind: str
    quantities: tuple[str, ...]

    def read(self) -> list[Reading]:
        """Measure now; one reading per quantity, 'unavailable' with a reason on failure."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


@dataclass(frozen=True)
class Param:
    """One parameter of a sensor kind: its type, default and what it means."""

    type: type | tuple[type, ...]
    default: Any
    help: str
    # The value's rule (after the type check): the same one for `config check` and for the
    # node building the sensor, so a config that passes the check also starts.
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class SensorKind:
    """A row of the sensor table: where the class lives and which parameters it takes."""

    kind: str
    target: str  # "module:Class"; imported only when a node builds this kind
    quantities: tuple[str, ...]
    params: dict[str, Param]
    description: str

    def load(self) -> Any:
        """Import and return the sensor class."""
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)

    def problems(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """(parameter, problem) for each value its rule refuses (types are the config's to check)."""
        out = []
        for key, value in params.items():
            param = self.params.get(key)
            if param is None:
                out.append((key, f"unknown parameter (known: {', '.join(self.params)})"))
            elif param.check is not None and (message := param.check(value)):
                out.append((key, message))
        return out

    def build(self, ctx: HalContext, name: str, params: dict[str, Any]) -> Sensor:
        """Construct the sensor for a node; HalConfigError if a parameter breaks its rule."""
        problems = self.problems(params)
        if problems:
            raise HalConfigError(f"{name}: " + "; ".join(f"{k} {m}" for k, m in problems))
        full = {k: p.default for k, p in self.params.items()}
        full.update(params)
        return self.load()(ctx=ctx, name=name, **full)


def _targets(value: Any) -> str | None:
    """Each `label = "host:port"`, checked by the network sensor's own parser."""
    from hal.nethealth import parse_target

    if not isinstance(value, dict):
        return "must be a table of label = \"host:port\""
    for label, spec in value.items():
        try:
            parse_target(label, spec)
        except HalConfigError as exc:
            return str(exc)
    return None


_SHORT_TEXT = rule(lambda v: len(v) <= 256, "at most 256 characters")


SENSOR_KINDS: dict[str, SensorKind] = {
    k.kind: k
    for k in (
        SensorKind(
            "dht22", "hal.dht22:Dht22Sensor", ("temperature", "humidity"),
            {
                "device_name": Param(str, "dht11", "IIO device `name` file content to look for",
                                     rule(lambda v: 0 < len(v.strip()) <= 64, "a non-empty name")),
                "min_interval": Param((int, float), 2.0, "seconds between retries (the chip's limit)",
                                      between(0, 3600)),
            },
            "DHT22 through the kernel dht11 IIO driver (dtoverlay=dht11,gpiopin=N)",
        ),
        SensorKind(
            "bme680", "hal.bme680_sensor:Bme680Sensor",
            ("temperature", "humidity", "pressure", "gas_resistance", "iaq"),
            {
                "bus": Param(int, 1, "I2C bus number (/dev/i2c-N)", between(0, 255)),
                "address": Param(int, 0x77, "I2C address, 0x76 or 0x77",
                                 rule(lambda v: v in (0x76, 0x77), "0x76 (118) or 0x77 (119)")),
                "heater_temp": Param(int, 320, "gas heater target °C", between(200, 400, "200..400 °C")),
                "heater_ms": Param(int, 150, "gas heater duration ms", between(1, 4032, "1..4032 ms")),
                "lock_file": Param(str, "", "file lock held around trigger-wait-read ('' = none)", _SHORT_TEXT),
                "claim_gpio": Param(int, -1, "optional GPIO line claimed while measuring (-1 = none)",
                                    between(-1, 53, "a GPIO number 0..53, or -1 for none")),
            },
            "Bosch BME680/BME688 over I2C, with IAQ score",
        ),
        SensorKind(
            "monitor", "hal.monitor:SystemMonitor",
            ("cpu_temperature", "cpu_load", "memory_used", "memory_total", "memory_percent", "uptime"),
            {"thermal_zone": Param(str, "", "thermal zone name to prefer ('' = first cpu-like zone)",
                                   _SHORT_TEXT)},
            "CPU temperature, load, memory and uptime from sysfs/procfs",
        ),
        SensorKind(
            "network", "hal.nethealth:NetworkHealth", ("rtt", "packet_loss"),
            {
                "targets": Param(dict, {}, "label = \"host:port\" pairs; the agent adds the hub", _targets),
                "probes": Param(int, 3, "probes per target per read", between(1, 100)),
                "method": Param(str, "auto", "auto (ICMP where allowed, else TCP), icmp or tcp",
                                one_of(("auto", "icmp", "tcp"))),
                "timeout": Param((int, float), 1.0, "seconds to wait for one probe",
                                 rule(lambda v: 0 < v <= 60, "within (0, 60] seconds")),
            },
            "RTT and loss to the hub and peers (ICMP where allowed, else TCP connect)",
        ),
    )
}
