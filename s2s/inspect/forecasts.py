"""What `s2s plot --forecast` draws: for a few series of a forecasting run, the context
before the test period and the forecasts from every origin of it, beside the actual values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2s.inspect.plots import ForecastPanel
from s2s.tasks.forecasting.forecasting import Forecast, period_forecasts
from s2s.tasks.forecasting.windows import period_start

MAX_PANELS = 4


def _joined(forecasts: list[Forecast], name: str) -> np.ndarray:
    return np.concatenate([getattr(f, name) for f in forecasts])


def forecast_panels(run_dir: Path, split: str = "test") -> list[ForecastPanel]:
    """One panel for each of the run's first series."""
    series, forecasts, config = period_forecasts(run_dir, None, "cpu", split)
    percent = round(100 * config.forecast.interval)
    panels = []
    for s in series[:MAX_PANELS]:
        mine = [f for f in forecasts if f.series == s.id]
        if not mine:
            continue
        start = period_start(len(s), config.forecast, split)
        before = slice(max(0, start - config.forecast.context_length), start)
        parts = [_joined(mine, name) for name in ("times", "median", "lower", "upper", "actual")]
        title = f"{s.id}: {split} period"
        panels.append(
            ForecastPanel(title, s.times[before], s.values[before], *parts, f"{percent}% interval")
        )
    return panels
