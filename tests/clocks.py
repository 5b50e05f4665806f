"""A clock for tests: time moves only when the test moves it."""

from __future__ import annotations


class ManualClock:
    """Call it for the time; set `t` or `advance()` to move it."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        """Move time forward; returns the new time."""
        self.t += seconds
        return self.t
