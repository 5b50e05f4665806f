"""Every error the hardware layer raises; each also inherits the matching built-in."""

from __future__ import annotations


class HalError(Exception):
    """Base of every hardware-layer error."""


class ReadingError(HalError, ValueError):
    """A reading that breaks the quantity table (unknown quantity, wrong unit, bad value)."""


class HalConfigError(HalError, ValueError):
    """A device was configured with parameters it cannot use."""


class DeviceUnavailable(HalError, OSError):
    """The device is missing or not answering (no file, no chip, bus error after retries)."""


class BusError(DeviceUnavailable):
    """An I2C transaction failed after its retries."""


class PermissionDenied(HalError, PermissionError):
    """A caller asked for a device or address it was not granted."""


class ImplausibleValue(HalError, ValueError):
    """A measurement came back but cannot be right (skipped channel, out of range, jump)."""


class ActuatorArgumentError(HalError, ValueError):
    """An actuator command with an argument out of range (pixel index, colour, duration)."""
