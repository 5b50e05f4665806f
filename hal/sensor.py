"""The sensor interface and the table of sensor kinds a node config may declare."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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

    def build(self, ctx: HalContext, name: str, params: dict[str, Any]) -> Sensor:
        """Construct the sensor for a node; `params` were validated by the config layer."""
        full = {k: p.default for k, p in self.params.items()}
        full.update(params)
        return self.load()(ctx=ctx, name=name, **full)


SENSOR_KINDS: dict[str, SensorKind] = {
    k.kind: k
    for k in (
        SensorKind(
            "dht22", "hal.dht22:Dht22Sensor", ("temperature", "humidity"),
            {
                "device_name": Param(str, "dht11", "IIO device `name` file content to look for"),
                "min_interval": Param((int, float), 2.0, "seconds between retries (the chip's limit)"),
            },
            "DHT22 through the kernel dht11 IIO driver (dtoverlay=dht11,gpiopin=N)",
        ),
        SensorKind(
            "bme680", "hal.bme680_sensor:Bme680Sensor",
            ("temperature", "humidity", "pressure", "gas_resistance", "iaq"),
            {
                "bus": Param(int, 1, "I2C bus number (/dev/i2c-N)"),
                "address": Param(int, 0x77, "I2C address, 0x76 or 0x77"),
                "heater_temp": Param(int, 320, "gas heater target °C"),
                "heater_ms": Param(int, 150, "gas heater duration ms"),
                "lock_file": Param(str, "", "file lock held around trigger-wait-read ('' = none)"),
                "claim_gpio": Param(int, -1, "optional GPIO line claimed while measuring (-1 = none)"),
            },
            "Bosch BME680/BME688 over I2C, with IAQ score",
        ),
        SensorKind(
            "monitor", "hal.monitor:SystemMonitor",
            ("cpu_temperature", "cpu_load", "memory_used", "memory_total", "memory_percent", "uptime"),
            {"thermal_zone": Param(str, "", "thermal zone name to prefer ('' = first cpu-like zone)")},
            "CPU temperature, load, memory and uptime from sysfs/procfs",
        ),
        SensorKind(
            "network", "hal.nethealth:NetworkHealth", ("rtt", "packet_loss"),
            {
                "targets": Param(dict, {}, "label = \"host:port\" pairs; the agent adds the hub"),
                "probes": Param(int, 3, "probes per target per read"),
                "method": Param(str, "auto", "auto (ICMP where allowed, else TCP), icmp or tcp"),
                "timeout": Param((int, float), 1.0, "seconds to wait for one probe"),
            },
            "RTT and loss to the hub and peers (ICMP where allowed, else TCP connect)",
        ),
    )
}
