"""`harvester plugins ...`: test a plugin in the sandbox on recorded readings, scaffold a new one.

    harvester plugins test PLUGIN.py [--manifest M] --readings READINGS.json [--native]
    harvester plugins new NAME [--dir DIR]
    harvester plugins build            # build the sandbox component if its sources changed

`test` prints one JSON document (the plugin's results and the actions it requested) and
exits 0 when every evaluation succeeded with no refused call, 1 on a plugin error,
timeout, trap or denied call, 2 when the plugin, manifest or readings cannot be used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hal.errors import ReadingError
from hal.files import read_text_limited
from hal.readings import Reading, lookup

EXIT_OK, EXIT_PLUGIN, EXIT_USAGE = 0, 1, 2


class UsageProblem(Exception):
    """Input the test command cannot use (exit 2)."""


def _reading(row: Any, default_ts: float) -> Reading:
    if not isinstance(row, dict):
        raise UsageProblem(f"a reading must be an object, got {row!r}")
    quantity = row.get("quantity")
    known = lookup(quantity) if isinstance(quantity, str) else None
    if known is None:
        raise UsageProblem(f"reading {row!r}: unknown quantity {quantity!r}")
    full = {"node": "test", "sensor": "test", "unit": known.unit, "ts": default_ts,
            "quality": "ok" if row.get("value") is not None else "unavailable", **row}
    if full["value"] is None and not full.get("reason"):
        full["reason"] = "no value"
    try:
        return Reading.from_dict(full)
    except ReadingError as exc:
        raise UsageProblem(f"reading {row!r}: {exc}") from None


MAX_READINGS_BYTES = 8 * 1024 * 1024  # recorded readings for a test run; /dev/zero is not one


def load_batches(path: Path, now: float) -> list[list[Reading]]:
    """Readings file: one batch (a list of readings), several (a list of lists), or {"batches": [...]}.

    Missing fields default: node/sensor "test", unit from the quantity, ts now, quality "ok".
    """
    try:
        data = json.loads(read_text_limited(path, MAX_READINGS_BYTES))
    except (OSError, ValueError) as exc:  # InputFileError and JSON errors are ValueErrors
        raise UsageProblem(f"cannot read readings from {path}: {exc}") from None
    except RecursionError:
        raise UsageProblem(f"cannot read readings from {path}: JSON nested too deeply") from None
    if isinstance(data, dict):
        data = data.get("batches")
    if not isinstance(data, list) or not data:
        raise UsageProblem(f"{path}: expected a list of readings, a list of batches or {{\"batches\": [...]}}")
    batches = [[_reading(r, now) for r in batch] for batch in
               (data if all(isinstance(b, list) for b in data) else [data])]
    for i, batch in enumerate(batches):
        if len({r.node for r in batch}) > 1:
            raise UsageProblem(f"{path}: batch {i + 1} mixes nodes; a batch is one node's readings")
    return batches


def run_test(plugin: Path, manifest: Path | None, readings: Path, profile: str = "wasm") -> tuple[int, dict[str, Any]]:
    """Run one plugin on recorded batches with simulated hardware; returns (exit code, report)."""
    import shutil  # here, not at the top: every `harvester` process imports this module, nodes too
    import tempfile

    from plugins.host import PluginHost
    from plugins.services import RecordingServices

    if plugin.suffix not in (".py", ".wasm") or not plugin.is_file():
        raise UsageProblem(f"{plugin}: expected an existing .py or .wasm plugin file")
    manifest = manifest or plugin.with_suffix(".toml")
    if not manifest.is_file():
        raise UsageProblem(f"{manifest}: manifest not found (pass --manifest)")
    batches = load_batches(readings, time.time())
    node = batches[0][0].node if batches[0] else "test"
    clock = {"now": time.time()}
    with tempfile.TemporaryDirectory(prefix="harvester-plugin-test-") as tmp:
        folder = Path(tmp) / "plugins"
        folder.mkdir()
        shutil.copy(plugin, folder / plugin.name)
        shutil.copy(manifest, folder / f"{plugin.stem}.toml")
        services = RecordingServices(node)
        host = PluginHost(node, folder, profile, services, state_dir=None, clock=lambda: clock["now"])
        try:
            scan = host.scan()
            report: dict[str, Any] = {"plugin": plugin.stem, "backend": profile, "evaluations": []}
            if scan["failed"]:
                report["error"] = scan["failed"].get(plugin.stem) or next(iter(scan["failed"].values()))
                report["status"] = host.status(plugin.stem)
                return EXIT_PLUGIN, report
            code = EXIT_OK
            for batch in batches:
                # The clock follows the data, so a recorded file is never "stale" when replayed.
                clock["now"] = max((r.ts for r in batch), default=clock["now"])
                for outcome in host.evaluate(batch):
                    report["evaluations"].append(outcome)
                    if not outcome["ok"] or outcome["denied"]:
                        code = EXIT_PLUGIN
            status = host.status(plugin.stem)
            report["version"] = status["version"]
            report["alert_events"] = services.events
            report["status"] = {k: status[k] for k in ("state", "calls", "errors", "timeouts", "traps", "denied",
                                                       "p50_ms", "p99_ms", "last_error")}
            if status["state"] != "ok" and code == EXIT_OK:
                code = EXIT_PLUGIN
            return code, report
        finally:
            host.close()


def _problems(report: dict[str, Any]) -> list[str]:
    lines = []
    if report.get("error"):
        lines.append(f"cannot load: {report['error']}")
    for i, o in enumerate(report.get("evaluations", [])):
        if not o["ok"]:
            lines.append(f"batch {i + 1}: {o['kind']}: {o['error']}")
        for d in o["denied"]:
            lines.append(f"batch {i + 1}: denied call: {d}")
    return lines


def cmd_test(args: argparse.Namespace) -> int:
    """`harvester plugins test`."""
    from plugins.errors import PluginError

    # stderr carries the plugin's own log lines and a first run's compile notice; stdout the JSON
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")

    try:
        code, report = run_test(Path(args.plugin), Path(args.manifest) if args.manifest else None,
                                Path(args.readings), "native" if args.native else "wasm")
    except UsageProblem as exc:
        print(f"harvester plugins test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:  # the sandbox itself cannot run here
        print(f"harvester plugins test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    for line in _problems(report):
        print(f"harvester plugins test: {args.plugin}: {line}", file=sys.stderr)
    return code


PLUGIN_TEMPLATE = '''"""{name}: say here what this plugin watches and what it does about it."""

from harvester_plugin import run_alert_row


def evaluate(readings, host):
    """Called with every batch of readings carrying a quantity listed in {name}.toml.

    `readings` are Reading objects (node, sensor, quantity, value, unit, ts, quality);
    `host` offers now(), log(), set_led(), beep(), play(), state_get()/state_set(),
    raise_alert()/clear_alert() and i2c_read()/i2c_write(), each within the manifest's
    grants. Return a dict (shown by `harvester plugins test` and the plugins actor) or None.
    """
    return run_alert_row(readings, host, "{name}", host.config["quantity"])
'''

MANIFEST_TEMPLATE = '''[plugin]
name = "{name}"
version = "0.1.0"
description = "{name}: describe the rule"
quantities = ["temperature"]   # called only for batches carrying these

[permissions]
leds = [0]                     # LED indexes this plugin may set
buzzer = false
# i2c = [{{ bus = 1, address = 0x77, mode = "r" }}]

[limits]
call_ms = 50                   # stopped past this (per evaluate)
memory_mb = 32

[config]
quantity = "temperature"
high = 30.0                    # alert above this, held for hold_s
hysteresis = 1.0               # cleared below high - hysteresis
warn = 28.0                    # amber from here
hold_s = 30.0
stale_after_s = 120.0
severity = "warning"
led = 0
led_node = ""
'''


SENSOR_PLUGIN_TEMPLATE = '''"""{name}: a soil probe's output voltage, read from an ADS1115 over this plugin's I2C grant.

The ADC converts AIN0 continuously (config register 0x01); each poll reads the last conversion
(register 0x00). A chip that lost power comes back in single-shot mode with its reset config
(0x8583): the plugin then configures it again and reports that reading as unavailable.
"""

CONFIG_REGISTER, CONVERSION_REGISTER = 0x01, 0x00
# AIN0 against GND, +-4.096 V full scale, continuous, 128 samples/s, comparator off (ADS111x
# datasheet, section 8.6.3): MUX 100, PGA 001, MODE 0, DR 100, COMP_QUE 11
CONTINUOUS_AIN0 = 0x4283
FULL_SCALE_V = 4.096


def evaluate(readings, host):
    """A sensor plugin judges nothing; an alert rule on its quantity is a plugin of its own."""
    return None


def poll(host):
    """One reading of the probe's voltage (the host adds node, sensor and unit)."""
    bus, address = int(host.config["bus"]), int(host.config["address"])
    config = host.i2c_read(bus, address, CONFIG_REGISTER, 2)
    if (config[0] << 8 | config[1]) != CONTINUOUS_AIN0:
        host.i2c_write(bus, address, CONFIG_REGISTER, bytes([CONTINUOUS_AIN0 >> 8, CONTINUOUS_AIN0 & 0xFF]))
        return [{{"quantity": "soil_voltage", "value": None, "quality": "unavailable",
                  "reason": "ADC configured; the first conversion comes with the next poll", "ts": host.now()}}]
    raw = host.i2c_read(bus, address, CONVERSION_REGISTER, 2)
    code = raw[0] << 8 | raw[1]
    if code & 0x8000:
        code -= 0x10000
    return [{{"quantity": "soil_voltage", "value": round(code * FULL_SCALE_V / 32768, 4), "ts": host.now()}}]
'''

SENSOR_MANIFEST_TEMPLATE = '''[plugin]
name = "{name}"
version = "0.1.0"
description = "{name}: a soil probe's voltage from an ADS1115"
quantities = ["soil_voltage"]  # evaluate sees only its own readings (and ignores them)

[permissions]
leds = []
buzzer = false
i2c = [{{ bus = 1, address = 0x48, mode = "rw" }}]

[limits]
call_ms = 50
memory_mb = 32

[sensor]
interval = 5.0                 # seconds between polls
quantities = ["soil_voltage"]

[[quantities]]                 # not a built-in: declared here; the hub learns it from the node's hello
name = "soil_voltage"
unit = "V"
low = -0.3
high = 4.2
description = "a soil probe's output voltage (AIN0 of an ADS1115)"
device_class = "voltage"

[config]
bus = 1
address = 0x48
'''


def cmd_new(args: argparse.Namespace) -> int:
    """`harvester plugins new`."""
    from plugins.manifest import NAME_RE

    name, folder = args.name, Path(args.dir)
    if not NAME_RE.match(name):
        print(f"harvester plugins new: {name!r} is not a plugin name ([a-z][a-z0-9_]{{0,47}})", file=sys.stderr)
        return EXIT_USAGE
    targets = [folder / f"{name}.py", folder / f"{name}.toml"]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        print(f"harvester plugins new: not overwriting {', '.join(existing)}", file=sys.stderr)
        return EXIT_USAGE
    folder.mkdir(parents=True, exist_ok=True)
    code, manifest = (SENSOR_PLUGIN_TEMPLATE, SENSOR_MANIFEST_TEMPLATE) if args.sensor else \
        (PLUGIN_TEMPLATE, MANIFEST_TEMPLATE)
    targets[0].write_text(code.format(name=name), encoding="utf-8")
    targets[1].write_text(manifest.format(name=name), encoding="utf-8")
    for p in targets:
        print(p)
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    """`harvester plugins build`."""
    from plugins.sandbox.build import main

    return main([])
