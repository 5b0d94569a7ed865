"""The baselines every forecast is measured against, from the same context: naive (the
last value), seasonal naive (the value one season back) and ETS (Holt-Winters exponential
smoothing from statsmodels, the optional extra ``forecast``, fitted on all the history
before the origin)."""

from __future__ import annotations

import warnings

import numpy as np

from s2s.tasks.forecasting.windows import seasonal_naive

ETS_MISSING = "ETS baseline skipped: statsmodels is not installed (pip install 's2s[forecast]')"


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(history[-1], horizon)


def seasonal(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    return seasonal_naive(history, horizon, period)


def statsmodels_available() -> bool:
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        return False
    return True


def ets(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Additive Holt-Winters (no trend, additive season) fitted by maximum likelihood on
    ``history``; without a season (period 1 or too short a history), simple smoothing."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal_kind = "add" if period > 1 and len(history) >= 2 * period else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fit is used as it is
        model = ExponentialSmoothing(
            history.astype(np.float64),
            seasonal=seasonal_kind,
            seasonal_periods=period if seasonal_kind else None,
            initialization_method="estimated",
        )
        return np.asarray(model.fit().forecast(horizon), dtype=np.float64)
