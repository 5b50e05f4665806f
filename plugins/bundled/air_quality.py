"""Indoor air quality (IAQ, 0 best .. 500 worst) above 200: LED 2 red and an alert; amber near it,
while the gas sensor calibrates, or without fresh data; else green.

Thresholds, hold time and hysteresis are in air_quality.toml ([config]).
"""

from harvester_plugin import run_alert_row


def evaluate(readings, host):
    """One row of the alert table (no sound: a slow-moving quantity)."""
    return run_alert_row(readings, host, "air_quality", "iaq")
