"""Availability in one place: a device part's failure is logged once, its recovery once."""

from __future__ import annotations

import logging


class FailureLog:
    """Per-part failure state of one device; logs the first failure and the recovery, not every poll."""

    def __init__(self, logger: logging.Logger, name: str, down: str = "unavailable",
                 up: str = "recovered") -> None:
        self._log, self._name, self._down, self._up = logger, name, down, up
        self._reasons: dict[str, str] = {}

    def failed(self, part: str, reason: str) -> None:
        """Record a failure; a warning the first time, debug when only the reason changes."""
        old = self._reasons.get(part)
        if old is None:
            self._log.warning("%s: %s %s: %s", self._name, part, self._down, reason)
        elif old != reason:
            self._log.debug("%s: %s still %s: %s", self._name, part, self._down, reason)
        self._reasons[part] = reason

    def recovered(self, part: str) -> None:
        """Record success; logs once if the part was failing."""
        if self._reasons.pop(part, None) is not None:
            self._log.info("%s: %s %s", self._name, part, self._up)

    def failing(self, part: str) -> str | None:
        """The current failure reason of a part, or None."""
        return self._reasons.get(part)
