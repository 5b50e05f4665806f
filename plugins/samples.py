"""The latest batch of each sensor, as the JSON text plugins receive: what a new or changed plugin
is checked on before it replaces the running version, and what an on-demand evaluation runs on."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from hal.errors import ReadingError
from hal.readings import Reading

MAX_SAMPLES = 16
Sample = tuple[str, set[str], str]  # JSON text of the batch, its quantities, its node


def _row(r: Reading) -> dict[str, Any]:
    # dataclasses.asdict deep-copies field by field: ten times slower on this hot path
    return {"node": r.node, "sensor": r.sensor, "quantity": r.quantity, "value": r.value, "unit": r.unit,
            "ts": r.ts, "quality": r.quality, "reason": r.reason}


class Samples:
    """The latest batch of up to MAX_SAMPLES sensors, most recent last. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # a kept batch: its Sample, or its readings until the Sample is first wanted (see keep)
        self._latest: OrderedDict[tuple[str, str], Sample | list[Reading]] = OrderedDict()

    def batch(self, readings: Iterable[Reading | dict[str, Any]], keep: bool) -> Sample | None:
        """One node's batch as plugins receive it (None when empty); kept as its sensor's latest if `keep`.

        Raises ReadingError for a reading that is not valid or a batch of several nodes."""
        checked = _checked(readings)
        if not checked:
            return None
        sample = _sample(checked)
        if keep:
            self._keep(checked, sample)
        return sample

    def keep(self, readings: Iterable[Reading | dict[str, Any]]) -> bool:
        """Keep one node's batch as its sensor's latest, as batch() does, but build its Sample only
        when one is wanted; False for an empty batch. Raises as batch() does.

        For a node without plugins, whose batches are only kept for a plugin yet to come: the
        hub keeps what a thousand spokes push, ten thousand readings a second, of which the
        latest MAX_SAMPLES sensors' batches are ever used."""
        checked = _checked(readings)
        if checked:
            self._keep(checked, checked)
        return bool(checked)

    def _keep(self, checked: list[Reading], kept: Sample | list[Reading]) -> None:
        with self._lock:
            key = (checked[0].node, checked[0].sensor)
            self._latest[key] = kept
            self._latest.move_to_end(key)
            while len(self._latest) > MAX_SAMPLES:
                self._latest.popitem(last=False)

    def list(self) -> list[Sample]:
        """The kept batches, least recent first."""
        with self._lock:
            for key, kept in self._latest.items():
                if isinstance(kept, list):  # (a value replaced, no key added: the iteration holds)
                    self._latest[key] = _sample(kept)
            return list(self._latest.values())  # type: ignore[arg-type]


def _checked(readings: Iterable[Reading | dict[str, Any]]) -> list[Reading]:
    """The batch's readings, each a checked Reading, all of one node; ReadingError otherwise."""
    checked = [r if isinstance(r, Reading) else Reading.from_dict(r) for r in readings]
    if checked and any(r.node != checked[0].node for r in checked):
        raise ReadingError("a batch holds the readings of one node")
    return checked


def _sample(checked: list[Reading]) -> Sample:
    rows = [_row(r) for r in checked]
    return json.dumps(rows, separators=(",", ":")), {r.quantity for r in checked}, checked[0].node
