"""Room temperature above 30 °C: LED 1 red and the buzzer; amber near it or without fresh data; else green.

Thresholds, hold time and hysteresis are in room_temperature.toml ([config]); edit them
while the node runs and the plugin reloads itself.
"""

from harvester_plugin import run_alert_row


def sound(host, node):
    """What happens when the alert fires (and every repeat_s while it stays unacknowledged)."""
    host.play(host.config.get("pattern", "alert"), node=node)


def evaluate(readings, host):
    """One row of the alert table."""
    return run_alert_row(readings, host, "room_temperature", "temperature", on_raise=sound)
