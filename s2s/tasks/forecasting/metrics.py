"""Forecast accuracy: MASE (scaled by the in-sample seasonal-naive error), sMAPE, CRPS from
samples, and the coverage of a central interval. Each takes numpy arrays of one
evaluation's windows, so the model and the baselines are scored by the same code."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from s2s.config import ForecastConfig
from s2s.tasks.forecasting.series import Series
from s2s.tasks.forecasting.windows import period_start


def mase_scales(series: list[Series], config: ForecastConfig, split: str) -> np.ndarray:
    """Per series: the mean absolute error of the seasonal-naive forecast one step ahead
    over the history before ``split``'s period (Hyndman and Koehler, 2006)."""
    scales = []
    for s in series:
        history = s.values[: period_start(len(s), config, split)].astype(np.float64)
        period = config.season_length if len(history) > config.season_length else 1
        error = np.abs(history[period:] - history[:-period]).mean() if len(history) > 1 else 0.0
        scales.append(error if error > 0 else 1.0)
    return np.asarray(scales)


def crps_from_samples(samples: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """CRPS of each value from its samples [S, ...]: E|X - y| - E|X - X'| / 2, the second
    term from the sorted samples in O(S log S)."""
    count = samples.shape[0]
    first = np.abs(samples - actual).mean(axis=0)
    ordered = np.sort(samples, axis=0)
    weights = (2 * np.arange(1, count + 1) - count - 1).reshape(-1, *([1] * actual.ndim))
    spread = (weights * ordered).sum(axis=0) * 2 / count**2
    return first - spread / 2


@dataclass
class Tally:
    """One forecaster's sums over the windows of an evaluation."""

    series: int
    abs_error: np.ndarray = field(init=False)  # per series
    steps: np.ndarray = field(init=False)
    smape: float = 0.0
    crps: float = 0.0
    abs_actual: float = 0.0
    covered: int = 0
    intervals: int = 0

    def __post_init__(self) -> None:
        self.abs_error = np.zeros(self.series)
        self.steps = np.zeros(self.series)

    def add(
        self,
        number: int,
        actual: np.ndarray,
        median: np.ndarray,
        samples: np.ndarray | None = None,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Score one window of series ``number``; a point forecaster has no samples (its
        CRPS is then its absolute error) and no interval."""
        error = np.abs(actual - median)
        self.abs_error[number] += error.sum()
        self.steps[number] += actual.size
        denominator = np.abs(actual) + np.abs(median)
        self.smape += float(
            np.where(denominator > 0, 2 * error / np.maximum(denominator, 1e-12), 0).sum()
        )
        crps = error if samples is None else crps_from_samples(samples, actual)
        self.crps += float(crps.sum())
        self.abs_actual += float(np.abs(actual).sum())
        if bounds is not None:
            self.covered += int(((actual >= bounds[0]) & (actual <= bounds[1])).sum())
            self.intervals += actual.size

    def scores(self, scales: np.ndarray) -> dict[str, float]:
        """MASE (mean over series), sMAPE (%), CRPS (summed, over the summed |actual|:
        scale-free) and coverage (NaN without intervals)."""
        values = max(int(self.steps.sum()), 1)
        per_series = self.abs_error / np.maximum(self.steps, 1) / scales
        return {
            "mase": float(per_series[self.steps > 0].mean()),
            "smape": 100.0 * self.smape / values,
            "crps": self.crps / max(self.abs_actual, 1e-12),
            "coverage": self.covered / self.intervals if self.intervals else float("nan"),
        }
