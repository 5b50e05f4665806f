"""An open indoor-air-quality index from BME680 gas resistance and humidity.

Algorithm: Pimoroni's bme680 `indoor-air-quality.py` example, an open alternative to
Bosch's closed BSEC library:

1. Burn-in: for `burn_in_s` (300 s) after the first reading, collect gas resistance; the
   gas baseline is the mean of the last 50 burn-in readings (of all of them if fewer,
   where the example divides by 50 regardless). We also require `min_burn_in_samples`
   readings, because a node reading every 60 s would otherwise finish with 5 samples.
2. Score, 0..100 with 100 best, humidity weighted 25 % around a 40 %RH ideal, gas 75 %::

       hum_offset = humidity - 40
       hum_score  = (100 - 40 - hum_offset) / (100 - 40) * 25    if hum_offset > 0
                  = (40 + hum_offset) / 40 * 25                   otherwise
       gas_score  = gas / gas_baseline * 75                       if gas < gas_baseline
                  = 75                                            otherwise
       score_100  = hum_score + gas_score

3. Index, 0..500 with 0 best: iaq = (100 - score_100) * 5, banded as 0-50 good,
   51-150 moderate, 151-175 unhealthy for sensitive groups, 176-200 unhealthy,
   201-300 very unhealthy, > 300 hazardous. For fractional scores each band's upper
   bound is inclusive: 50.0 is good, 50.2 moderate.

During burn-in the index is computed against the provisional baseline (mean of the
samples so far) and flagged "calibrating", so it is shown but never alerts.

Adaptation after burn-in (our choice; the example keeps its baseline fixed): MOX sensors
drift and clean-air resistance varies by day, so the gas readings are averaged per hour
over a 24 h window. The target is the highest hourly mean (the cleanest hour; a mean
rather than a single maximum so one dry-air spike cannot set it) or, for the first 24 h,
the burn-in baseline if that is higher. The baseline moves toward the target with a 6 h
time constant of operating time (a gap between updates counts as at most 300 s). A room
that stays polluted for more than a day therefore slowly reads as "normal" -- the price
of tracking drift.

State (burn-in samples, baseline, hourly means) persists in `state_path` as JSON written
atomically (temp file, fsync, os.replace), so a restart keeps its calibration. A burn-in
interrupted for longer than `burn_in_s` restarts (the early samples are from a heater
that has since cooled); a corrupt state file is logged, kept as `<name>.corrupt`, and
burn-in restarts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal.errors import HalConfigError, ImplausibleValue
from hal.files import write_json_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1
BASELINE_SAMPLES = 50
HUM_BASELINE = 40.0  # %RH, "optimal indoor humidity" in the example
HUM_WEIGHTING = 0.25
MAX_ADAPT_STEP_S = 300.0  # a gap between updates counts as at most this much adaptation time
BANDS: tuple[tuple[float, str], ...] = (
    (50.0, "good"),
    (150.0, "moderate"),
    (175.0, "unhealthy for sensitive groups"),
    (200.0, "unhealthy"),
    (300.0, "very unhealthy"),
    (math.inf, "hazardous"),
)


def band_of(score: float) -> str:
    """The named band of an IAQ index (0 best, 500 worst); upper bounds are inclusive."""
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
        raise ValueError(f"an IAQ index is a finite number >= 0, got {score!r}")
    for upper, name in BANDS:
        if score <= upper:
            return name
    return BANDS[-1][1]  # unreachable: the last bound is infinite


def air_quality_score(gas_resistance: float, humidity: float, gas_baseline: float) -> float:
    """Pimoroni's score, 0..100 with 100 best (see the module docstring for the formula)."""
    hum_offset = humidity - HUM_BASELINE
    if hum_offset > 0:
        hum_score = (100.0 - HUM_BASELINE - hum_offset) / (100.0 - HUM_BASELINE)
    else:
        hum_score = (HUM_BASELINE + hum_offset) / HUM_BASELINE
    hum_score *= HUM_WEIGHTING * 100.0
    gas_weight = 100.0 - HUM_WEIGHTING * 100.0
    gas_score = gas_resistance / gas_baseline * gas_weight if gas_resistance < gas_baseline else gas_weight
    return min(100.0, max(0.0, hum_score + gas_score))


def iaq_index(score_100: float) -> float:
    """Map a 0..100 (100 best) score onto the 0..500 (0 best) index."""
    return min(500.0, max(0.0, (100.0 - score_100) * 5.0))


@dataclass(frozen=True)
class IaqResult:
    """One IAQ estimate: index 0..500 (0 best), its band, 'ok' or 'calibrating', the baseline."""

    score: float
    band: str
    quality: str  # "ok" | "calibrating"
    baseline_gas: float | None


class IaqEstimator:
    """Turns gas resistance and humidity into an IAQ index, keeping its calibration on disk."""

    def __init__(self, state_path: Path | str, clock: Callable[[], float] = time.time,
                 burn_in_s: float = 300.0, min_burn_in_samples: int = 10,
                 window_s: float = 86400.0, adapt_tau_s: float = 6 * 3600.0,
                 save_interval_s: float = 60.0) -> None:
        if burn_in_s < 0 or window_s <= 0 or adapt_tau_s <= 0 or save_interval_s < 0:
            raise HalConfigError("burn_in_s and save_interval_s must be >= 0, window_s and adapt_tau_s > 0")
        if min_burn_in_samples < 1:
            raise HalConfigError(f"min_burn_in_samples must be >= 1, got {min_burn_in_samples!r}")
        self.state_path = Path(state_path)
        self.clock = clock
        self.burn_in_s = float(burn_in_s)
        self.min_burn_in_samples = min_burn_in_samples
        self.window_s = float(window_s)
        self.bucket_s = self.window_s / 24.0
        self.adapt_tau_s = float(adapt_tau_s)
        self.save_interval_s = float(save_interval_s)
        self._lock = threading.Lock()
        self._last_save = -math.inf
        self._save_failing = False
        self._state = self._load()

    @property
    def baseline_gas(self) -> float | None:
        """The gas baseline in Ω once burn-in is complete, else None."""
        return self._state["baseline_gas"]

    @property
    def calibrated(self) -> bool:
        """True once burn-in has produced a baseline."""
        return self._state["baseline_gas"] is not None

    def update(self, gas_resistance: float, humidity: float) -> IaqResult:
        """Feed one measurement and get the index; raises ImplausibleValue for impossible input."""
        if not _finite(gas_resistance) or gas_resistance <= 0:
            raise ImplausibleValue(f"gas resistance must be a finite number > 0 Ω, got {gas_resistance!r}")
        if not _finite(humidity) or not 0.0 <= humidity <= 100.0:
            raise ImplausibleValue(f"humidity must be within 0..100 %RH, got {humidity!r}")
        gas, hum = float(gas_resistance), float(humidity)
        with self._lock:
            now = self.clock()
            st = self._state
            if st["baseline_gas"] is None:
                result = self._burn_in(now, gas, hum)
            else:
                self._adapt(now, gas)
                result = self._result(gas, hum, st["baseline_gas"], "ok", st["baseline_gas"])
            st["updated"] = now
            if now - self._last_save >= self.save_interval_s or now < self._last_save:
                self._save(now)
            return result

    def save(self) -> None:
        """Write the state now (e.g. at shutdown); failures are logged, not raised."""
        with self._lock:
            self._save(self.clock())

    # -- burn-in and adaptation ----------------------------------------------------------

    def _burn_in(self, now: float, gas: float, hum: float) -> IaqResult:
        st = self._state
        started = st["burn_in_started"]
        if started is None or now < started:
            st["burn_in_started"] = started = now
        st["burn_in"] = (st["burn_in"] + [gas])[-BASELINE_SAMPLES:]
        st["burn_in_count"] += 1
        samples = st["burn_in"]
        mean = sum(samples) / len(samples)
        if now - started >= self.burn_in_s and st["burn_in_count"] >= self.min_burn_in_samples:
            st["baseline_gas"] = mean
            # The burn-in baseline stays a candidate target for one window, so a polluted
            # first day cannot pull the baseline below the air it was calibrated in.
            st["anchor"] = [now, mean]
            st["hourly"] = []
            log.info("IAQ burn-in complete after %d samples: gas baseline %.0f Ω",
                     st["burn_in_count"], mean)
            self._last_save = -math.inf  # persist the new baseline straight away
            return self._result(gas, hum, mean, "ok", mean)
        return self._result(gas, hum, mean, "calibrating")

    def _adapt(self, now: float, gas: float) -> None:
        """Fold the reading into its hourly mean and move the baseline toward the cleanest hour."""
        st = self._state
        bucket = math.floor(now / self.bucket_s) * self.bucket_s
        hourly: list[list[float]] = [h for h in st["hourly"] if h[0] > now - self.window_s]
        if hourly and hourly[-1][0] == bucket:
            hourly[-1][1] += gas
            hourly[-1][2] += 1
        else:
            hourly.append([bucket, gas, 1])
        st["hourly"] = hourly
        target = max(total / count for _, total, count in hourly)
        anchor = st["anchor"]
        if anchor is not None and anchor[0] > now - self.window_s:
            target = max(target, anchor[1])
        last = st["updated"]
        dt = min(MAX_ADAPT_STEP_S, max(0.0, now - last)) if last is not None else 0.0
        baseline = st["baseline_gas"]
        st["baseline_gas"] = baseline + (target - baseline) * (1.0 - math.exp(-dt / self.adapt_tau_s))

    @staticmethod
    def _result(gas: float, hum: float, baseline: float, quality: str,
                reported_baseline: float | None = None) -> IaqResult:
        score = round(iaq_index(air_quality_score(gas, hum, baseline)), 1)
        return IaqResult(score, band_of(score), quality, reported_baseline)

    # -- persistence -------------------------------------------------------------------

    @staticmethod
    def _fresh() -> dict[str, Any]:
        return {"version": STATE_VERSION, "burn_in_started": None, "burn_in": [], "burn_in_count": 0,
                "baseline_gas": None, "hourly": [], "anchor": None, "updated": None}

    def _load(self) -> dict[str, Any]:
        """The saved state, or a fresh burn-in when there is none, it is stale, or it is corrupt."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.info("no IAQ state at %s; starting burn-in", self.state_path)
            return self._fresh()
        except OSError as exc:
            log.error("cannot read IAQ state %s (%s); starting burn-in", self.state_path, exc)
            return self._fresh()
        try:
            state = _validated(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            aside = self.state_path.with_name(self.state_path.name + ".corrupt")
            try:
                os.replace(self.state_path, aside)
                kept = f"kept as {aside}"
            except OSError as move_exc:
                kept = f"could not keep it aside: {move_exc}"
            log.error("corrupt IAQ state %s (%s); %s; burn-in restarts", self.state_path, exc, kept)
            return self._fresh()
        now = self.clock()
        if (state["baseline_gas"] is None and state["updated"] is not None
                and now - state["updated"] > self.burn_in_s):
            log.info("IAQ burn-in in %s was interrupted for %.0f s; starting it again",
                     self.state_path, now - state["updated"])
            return self._fresh()
        log.info("IAQ state loaded from %s (baseline %s)", self.state_path, state["baseline_gas"])
        return state

    def _save(self, now: float) -> None:
        """Atomic write: a crash leaves either the old file or the new one, never half of one."""
        try:
            write_json_atomic(self.state_path, self._state)
        except OSError as exc:
            if not self._save_failing:
                log.warning("cannot save IAQ state to %s: %s", self.state_path, exc)
                self._save_failing = True
            return
        if self._save_failing:
            log.info("IAQ state saved to %s again", self.state_path)
            self._save_failing = False
        self._last_save = now


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validated(data: Any) -> dict[str, Any]:
    """Check a loaded state's shape and values; raise ValueError on anything off."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"not a version-{STATE_VERSION} IAQ state")
    expected = set(IaqEstimator._fresh())
    if set(data) != expected:
        raise ValueError(f"fields {sorted(data)} differ from {sorted(expected)}")
    for key in ("burn_in_started", "baseline_gas", "updated"):
        if data[key] is not None and not _finite(data[key]):
            raise ValueError(f"{key} must be a number or null, got {data[key]!r}")
    if data["baseline_gas"] is not None and data["baseline_gas"] <= 0:
        raise ValueError(f"baseline_gas must be > 0, got {data['baseline_gas']!r}")
    if not isinstance(data["burn_in"], list) or not all(_finite(g) and g > 0 for g in data["burn_in"]):
        raise ValueError("burn_in must be a list of positive numbers")
    if len(data["burn_in"]) > BASELINE_SAMPLES:
        raise ValueError(f"burn_in holds more than {BASELINE_SAMPLES} samples")
    count = data["burn_in_count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < len(data["burn_in"]):
        raise ValueError(f"burn_in_count must be an integer >= len(burn_in), got {count!r}")
    hourly = data["hourly"]
    if not isinstance(hourly, list) or not all(
        isinstance(h, list) and len(h) == 3 and all(_finite(v) for v in h) and h[1] > 0 and h[2] >= 1
        for h in hourly
    ):
        raise ValueError("hourly must be a list of [bucket start, sum, count]")
    anchor = data["anchor"]
    if anchor is not None and not (isinstance(anchor, list) and len(anchor) == 2
                                   and all(_finite(v) for v in anchor) and anchor[1] > 0):
        raise ValueError("anchor must be null or [time, gas]")
    return data
