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
    # "module:function(ctx, params)" that places this kind's emulated device in mock mode (a chip
    # on the emulated I2C bus, a probe on the emulated 1-wire bus) when none is there yet, so a
    # mock node needs no keys beyond the real defaults. "" = the kind's device is always there.
    emulation: str = ""
    # Rules between parameters (an ADS1115's dry and wet points, an address a model cannot have):
    # given every parameter with defaults filled in, (parameter, problem) for each one broken.
    combined: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None

    def with_defaults(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter: the given ones over the defaults."""
        return {**{k: p.default for k, p in self.params.items()}, **params}

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
        if not out and self.combined is not None:
            out.extend(self.combined(self.with_defaults(params)))
        return out

    def build(self, ctx: HalContext, name: str, params: dict[str, Any]) -> Sensor:
        """Construct the sensor for a node; HalConfigError if a parameter breaks its rule."""
        problems = self.problems(params)
        if problems:
            raise HalConfigError(f"{name}: " + "; ".join(f"{k} {m}" for k, m in problems))
        full = self.with_defaults(params)
        if self.emulation and ctx.mode == "mock":
            module, _, function = self.emulation.partition(":")
            getattr(importlib.import_module(module), function)(ctx, full)
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
_BUS = Param(int, 1, "I2C bus number (/dev/i2c-N)", between(0, 255))
# The addresses each Sensirion humidity model can be ordered with (datasheets: SHT3x-DIS
# ADDR pin low/high; SHT4x part numbers -A, -B, -C).
SHT_ADDRESSES = {"sht3x": (0x44, 0x45), "sht4x": (0x44, 0x45, 0x46)}
ADS1115_GAINS = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)  # full-scale range in volts per PGA setting


def _sht_combined(p: dict[str, Any]) -> list[tuple[str, str]]:
    allowed = SHT_ADDRESSES[p["model"]]
    if p["address"] in allowed:
        return []
    return [("address", f"an {p['model'].upper()} answers at {' or '.join(hex(a) for a in allowed)}, "
                        f"not {hex(p['address'])}")]


def _ads_combined(p: dict[str, Any]) -> list[tuple[str, str]]:
    if p["dry"] == p["wet"]:
        return [("wet", f"must differ from dry (both {p['dry']}): the two calibration points set the scale")]
    return []


def _hex_address(options: tuple[int, ...]) -> Callable[[Any], str | None]:
    return rule(lambda v: v in options, " or ".join(f"{hex(a)} ({a})" for a in options))


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
        SensorKind(
            "ds18b20", "hal.ds18b20:Ds18b20Sensor", ("temperature",),
            {"device": Param(str, "", "1-wire id such as 28-00000a1b2c3d ('' = the first 28-* device)",
                             rule(lambda v: v == "" or (len(v) == 15 and v.startswith("28-")
                                                        and all(c in "0123456789abcdef" for c in v[3:])),
                                  "28- and 12 lowercase hex digits, or '' for the first probe"))},
            "DS18B20 1-wire probe through the kernel's w1-therm driver (dtoverlay=w1-gpio)",
            emulation="hal.emulated.w1:emulate_ds18b20",
        ),
        SensorKind(
            "sht4x", "hal.sht4x:ShtSensor", ("temperature", "humidity"),
            {
                "bus": _BUS,
                "address": Param(int, 0x44, "I2C address (0x44; 0x45, 0x46 by part number)",
                                 _hex_address((0x44, 0x45, 0x46))),
                "model": Param(str, "sht4x", "sht4x (SHT40/41/45) or sht3x (SHT30/31/35)",
                               one_of(("sht4x", "sht3x"))),
                "precision": Param(str, "high", "measurement repeatability: high, medium or low",
                                   one_of(("high", "medium", "low"))),
            },
            "Sensirion SHT4x or SHT3x temperature and humidity over I2C (CRC-8 checked)",
            emulation="hal.emulated.sht_chip:emulate", combined=_sht_combined,
        ),
        SensorKind(
            "scd4x", "hal.scd4x:Scd4xSensor", ("co2", "temperature", "humidity"),
            {
                "bus": _BUS,
                "address": Param(int, 0x62, "I2C address (always 0x62)", _hex_address((0x62,))),
                "altitude": Param(int, 0, "metres above sea level, for the CO2 pressure compensation",
                                  between(0, 3000, "0..3000 m")),
                "temperature_offset": Param((int, float), 4.0, "°C the board's own heat adds (datasheet default 4)",
                                            between(0, 20, "0..20 °C")),
            },
            "Sensirion SCD40/SCD41 photoacoustic CO2 over I2C, periodic measurement",
            emulation="hal.emulated.scd4x_chip:emulate",
        ),
        SensorKind(
            "bh1750", "hal.bh1750:Bh1750Sensor", ("illuminance",),
            {
                "bus": _BUS,
                "address": Param(int, 0x23, "I2C address, 0x23 (ADDR low) or 0x5c (ADDR high)",
                                 _hex_address((0x23, 0x5C))),
                "resolution": Param(str, "high", "high (1 lx), high2 (0.5 lx) or low (4 lx)",
                                    one_of(("high", "high2", "low"))),
            },
            "ROHM BH1750 ambient light over I2C",
            emulation="hal.emulated.bh1750_chip:emulate",
        ),
        SensorKind(
            "ads1115", "hal.ads1115:Ads1115Sensor", ("soil_moisture",),
            {
                "bus": _BUS,
                "address": Param(int, 0x48, "I2C address 0x48..0x4b (ADDR to GND, VDD, SDA, SCL)",
                                 _hex_address((0x48, 0x49, 0x4A, 0x4B))),
                "channel": Param(int, 0, "single-ended input AIN0..AIN3", between(0, 3, "0..3")),
                "gain": Param((int, float), 4.096, "full-scale range in volts",
                              rule(lambda v: v in ADS1115_GAINS, "one of " + ", ".join(map(str, ADS1115_GAINS)))),
                "dry": Param(int, 20000, "raw value with the probe in dry soil (or air)",
                             between(-32768, 32767, "a raw value -32768..32767")),
                "wet": Param(int, 9000, "raw value with the probe in water",
                             between(-32768, 32767, "a raw value -32768..32767")),
            },
            "TI ADS1115 16-bit ADC, one single-ended channel as soil moisture (calibrated dry/wet)",
            emulation="hal.emulated.ads1115_chip:emulate", combined=_ads_combined,
        ),
    )
}
