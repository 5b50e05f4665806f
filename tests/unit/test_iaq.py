"""IaqEstimator: Pimoroni's formula, burn-in, persistence, corrupt state, adaptation, bands."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest

from hal.errors import ImplausibleValue
from hal.iaq import IaqEstimator, IaqResult, air_quality_score, band_of, iaq_index
from tests.clocks import ManualClock

T0 = 1_700_000_000.0
B = 200_000.0  # a typical clean-air gas resistance, Ω


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bme680-iaq.json"


def burn_in(est: IaqEstimator, clock: ManualClock, gas: float = B, seconds: int = 300,
            step: float = 1.0) -> IaqResult:
    """Feed one reading per step until the estimator calibrates; return the first 'ok' result."""
    for _ in range(int(seconds / step) + 100):
        result = est.update(gas, 40.0)
        if result.quality == "ok":
            return result
        clock.t += step
    raise AssertionError("burn-in never completed")


@pytest.mark.parametrize(("score", "band"), [
    (0, "good"), (50, "good"), (50.1, "moderate"), (51, "moderate"), (150, "moderate"),
    (150.5, "unhealthy for sensitive groups"), (151, "unhealthy for sensitive groups"),
    (175, "unhealthy for sensitive groups"), (176, "unhealthy"), (200, "unhealthy"),
    (201, "very unhealthy"), (300, "very unhealthy"), (300.1, "hazardous"), (500, "hazardous"),
])
def test_band_of_boundaries(score: float, band: str) -> None:
    assert band_of(score) == band


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "50", True])
def test_band_of_rejects_non_scores(bad: object) -> None:
    with pytest.raises(ValueError):
        band_of(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("gas", "hum", "expected"), [
    (B, 40.0, 100.0),            # at baseline, ideal humidity
    (2 * B, 40.0, 100.0),        # cleaner than baseline scores no higher
    (B / 2, 40.0, 62.5),         # 25 + 0.5 * 75
    (B, 70.0, 87.5),             # humid: (60 - 30) / 60 * 25 + 75
    (B, 20.0, 87.5),             # dry: 20 / 40 * 25 + 75
    (B, 100.0, 75.0),
    (B, 0.0, 75.0),
    (B / 4, 55.0, 18.75 + 18.75),
])
def test_air_quality_score_matches_pimoroni(gas: float, hum: float, expected: float) -> None:
    assert air_quality_score(gas, hum, B) == pytest.approx(expected)


def test_iaq_index_maps_score_onto_0_to_500() -> None:
    assert (iaq_index(100.0), iaq_index(62.5), iaq_index(0.0)) == (0.0, 187.5, 500.0)


def test_iaq_burn_in_is_calibrating_then_ok(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    first = est.update(B, 40.0)
    assert first.quality == "calibrating" and first.baseline_gas is None and not est.calibrated
    clock.t += 299
    assert est.update(B, 40.0).quality == "calibrating"
    for _ in range(8):
        clock.t += 1
        est.update(B, 40.0)
    clock.t += 1  # 300 s, 11 samples
    done = est.update(B, 40.0)
    assert done.quality == "ok" and done.baseline_gas == B and est.calibrated


def test_iaq_baseline_is_mean_of_last_50_burn_in_readings(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    gases = [100_000.0 + 1000.0 * i for i in range(301)]  # heater settling: resistance climbs
    for i, g in enumerate(gases):
        clock.t = T0 + i
        result = est.update(g, 40.0)
    assert result.quality == "ok"
    assert result.baseline_gas == pytest.approx(sum(gases[-50:]) / 50)


def test_iaq_calibrating_score_uses_the_provisional_baseline(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    est.update(B, 40.0)
    clock.t += 1
    r = est.update(B / 3, 40.0)  # provisional baseline = mean(B, B/3) = 2B/3
    assert r.quality == "calibrating"
    assert r.score == pytest.approx(iaq_index(25 + 0.5 * 75), abs=0.1)
    assert r.band == band_of(r.score)


def test_iaq_sparse_readings_need_min_samples(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, min_burn_in_samples=10)
    results = []
    for _ in range(10):
        results.append(est.update(B, 40.0).quality)
        clock.t += 60
    assert results == ["calibrating"] * 9 + ["ok"]


def test_iaq_scores_after_burn_in(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    burn_in(est, clock)
    clock.t += 1
    assert est.update(B, 40.0) == IaqResult(0.0, "good", "ok", pytest.approx(B))
    clock.t += 1
    bad = est.update(B / 2, 40.0)
    assert bad.score == pytest.approx(187.5, abs=0.1) and bad.band == "unhealthy"


def test_iaq_state_survives_a_restart(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    burn_in(est, clock, gas=150_000.0)
    clock.t += 3600
    again = IaqEstimator(state, clock=clock)
    assert again.calibrated and again.baseline_gas == pytest.approx(150_000.0)
    r = again.update(150_000.0, 40.0)
    assert r.quality == "ok" and r.score == 0.0


def test_iaq_interrupted_burn_in_resumes(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, save_interval_s=0)
    for _ in range(150):
        est.update(B, 40.0)
        clock.t += 1
    clock.t += 20  # a quick restart
    again = IaqEstimator(state, clock=clock, save_interval_s=0)
    results = []
    while clock.t < T0 + 300:
        results.append(again.update(B, 40.0).quality)
        clock.t += 1
    results.append(again.update(B, 40.0).quality)
    assert results[-1] == "ok" and results.count("ok") == 1


def test_iaq_stale_burn_in_starts_over(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, save_interval_s=0)
    for _ in range(200):
        est.update(B, 40.0)
        clock.t += 1
    clock.t += 3600  # the heater cooled down meanwhile
    again = IaqEstimator(state, clock=clock)
    start = clock.t
    burn_in(again, clock)
    assert clock.t - start >= 300


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    json.dumps({"version": 99}),
    json.dumps({"version": 1, "burn_in_started": None, "burn_in": [], "burn_in_count": 0,
                "baseline_gas": -5.0, "hourly": [], "anchor": None, "updated": None}),
    json.dumps({"version": 1, "burn_in_started": None, "burn_in": ["x"], "burn_in_count": 1,
                "baseline_gas": None, "hourly": [], "anchor": None, "updated": None}),
])
def test_iaq_corrupt_state_is_logged_kept_aside_and_burn_in_restarts(
        state: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture, content: str) -> None:
    state.parent.mkdir(parents=True)
    state.write_text(content)
    with caplog.at_level(logging.ERROR, logger="hal.iaq"):
        est = IaqEstimator(state, clock=clock)
    assert len(caplog.records) == 1 and "corrupt IAQ state" in caplog.records[0].getMessage()
    assert not est.calibrated
    assert est.update(B, 40.0).quality == "calibrating"
    assert (state.parent / (state.name + ".corrupt")).read_text() == content
    assert json.loads(state.read_text())["version"] == 1  # a fresh, valid state replaced it


def test_iaq_save_is_atomic_and_leaves_no_temp_files(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    burn_in(est, clock)
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]
    saved = json.loads(state.read_text())
    assert saved["baseline_gas"] == pytest.approx(B)


def test_iaq_save_failure_is_logged_once_and_recovers(
        state: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    est = IaqEstimator(state, clock=clock, save_interval_s=0)
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with caplog.at_level(logging.INFO, logger="hal.iaq"):
        for _ in range(3):
            assert est.update(B, 40.0).quality == "calibrating"
            clock.t += 1
        monkeypatch.setattr(os, "replace", real_replace)
        est.update(B, 40.0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot save IAQ state" in m for m in messages) == 1
    assert sum("saved to" in m and "again" in m for m in messages) == 1
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]


def test_iaq_saves_at_most_every_save_interval(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, save_interval_s=60)
    est.update(B, 40.0)
    first = json.loads(state.read_text())["updated"]
    for _ in range(30):
        clock.t += 1
        est.update(B, 40.0)
    assert json.loads(state.read_text())["updated"] == first
    clock.t += 30
    est.update(B, 40.0)
    assert json.loads(state.read_text())["updated"] == clock.t


def test_iaq_baseline_rises_slowly_toward_cleaner_air(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, save_interval_s=3600)
    burn_in(est, clock)
    for _ in range(60):  # one hour of clearly cleaner air, one reading a minute
        clock.t += 60
        est.update(2 * B, 40.0)
    # 6 h time constant: about 1 - e^(-1/6) = 15 % of the way after one hour.
    assert est.baseline_gas == pytest.approx(B + B * (1 - math.exp(-1 / 6)), rel=0.02)
    for _ in range(60 * 47):
        clock.t += 60
        est.update(2 * B, 40.0)
    assert est.baseline_gas == pytest.approx(2 * B, rel=0.01)


def test_iaq_baseline_follows_the_cleanest_hour_down_after_a_day(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, save_interval_s=3600)
    burn_in(est, clock)
    for _ in range(60 * 12):  # 12 h of lower resistance (sensor drift) stays anchored to B
        clock.t += 60
        est.update(B / 2, 40.0)
    assert est.baseline_gas == pytest.approx(B, rel=0.01)
    for _ in range(60 * 60):  # once the clean hour left the 24-h window, the baseline follows
        clock.t += 60
        est.update(B / 2, 40.0)
    assert est.baseline_gas == pytest.approx(B / 2, rel=0.05)


def test_iaq_a_long_gap_does_not_jump_the_baseline(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock)
    burn_in(est, clock)
    clock.t += 10 * 86400
    est.update(2 * B, 40.0)
    assert est.baseline_gas < B * (1 + (1 - math.exp(-300 / (6 * 3600)))) + 1


@pytest.mark.parametrize(("gas", "hum"), [(0.0, 40.0), (-1.0, 40.0), (math.nan, 40.0), (B, 100.5),
                                          (B, -1.0), (B, math.inf)])
def test_iaq_rejects_impossible_input(state: Path, clock: ManualClock, gas: float, hum: float) -> None:
    with pytest.raises(ImplausibleValue):
        IaqEstimator(state, clock=clock).update(gas, hum)


def test_iaq_score_stays_within_0_to_500(state: Path, clock: ManualClock) -> None:
    est = IaqEstimator(state, clock=clock, burn_in_s=0, min_burn_in_samples=1)
    for gas in (1.0, 1e3, 1e6, 1e9):
        for hum in (0.0, 40.0, 100.0):
            r = est.update(gas, hum)
            assert 0.0 <= r.score <= 500.0 and r.band == band_of(r.score)
            clock.t += 1
