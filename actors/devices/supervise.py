"""Supervision of one device: built on first use, rebuilt with exponential backoff after it
fails, its availability kept in one place."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeviceSlot(Generic[T]):
    """Holds a device; `get()` returns it, or None while a failed build or use backs off."""

    def __init__(self, what: str, build: Callable[[], T], clock: Callable[[], float] = time.time,
                 first_backoff: float = 1.0, max_backoff: float = 300.0) -> None:
        self.what = what
        self._build = build
        self._clock = clock
        self._first = first_backoff
        self._max = max_backoff
        self._backoff = first_backoff
        self._lock = threading.RLock()
        self._device: T | None = None
        self._retry_at = 0.0
        self.last_error: str | None = None
        self.restarts = 0

    @property
    def available(self) -> bool:
        """True when the device is built and has not failed since."""
        return self._device is not None

    def get(self) -> T | None:
        """The device, building it if due; None (with last_error set) while unavailable."""
        with self._lock:
            if self._device is not None:
                return self._device
            now = self._clock()
            if now < self._retry_at:
                return None
            try:
                self._device = self._build()
            except Exception as exc:  # any construction failure is an availability state
                self._schedule(f"cannot open: {type(exc).__name__}: {exc}", now)
                return None
            if self.last_error is not None:
                log.info("%s available again", self.what)
                self.restarts += 1
            self.last_error = None
            self._backoff = self._first
            return self._device

    def failed(self, exc: BaseException) -> None:
        """The device failed in use: close it and rebuild after the backoff."""
        with self._lock:
            device, self._device = self._device, None
            close = getattr(device, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as close_exc:  # closing a broken device may fail too
                    log.debug("%s: close after failure raised %r", self.what, close_exc)
            self._schedule(f"failed: {type(exc).__name__}: {exc}", self._clock())

    def _schedule(self, message: str, now: float) -> None:
        if self.last_error is None:
            log.warning("%s %s; retrying in %.0fs", self.what, message, self._backoff)
        self.last_error = f"{message} (retry in {self._backoff:.0f}s)"
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self._max)

    def close(self) -> None:
        """Close the device if built."""
        with self._lock:
            device, self._device = self._device, None
        close = getattr(device, "close", None)
        if close is not None:
            close()
