"""CPU temperature above 75 °C: LED 3 red and beeps; amber near it or without fresh data; else green.

Thresholds, hold time and hysteresis are in cpu_temperature.toml ([config]).
"""

from harvester_plugin import run_alert_row


def beeps(host, node):
    """What happens when the alert fires (and every repeat_s while it stays unacknowledged)."""
    cfg = host.config
    host.beep(cfg.get("beeps", 3), cfg.get("beep_ms", 200), node=node)


def evaluate(readings, host):
    """One row of the alert table."""
    return run_alert_row(readings, host, "cpu_temperature", "cpu_temperature", on_raise=beeps)
