"""Forecast windows: a context of ``context_length`` steps before an origin and the
``horizon`` steps after it, cut from the series; the periods (train, valid, test) are cut
by time at the end of every series, and a window never reads a value at or after its
origin except as its target."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from s2s.config import ForecastConfig
from s2s.errors import S2SError
from s2s.tasks.forecasting.series import Series


def lag_periods(config: ForecastConfig) -> list[int]:
    """The seasonal-naive inputs of the decoder: the season length and the extra lags."""
    return sorted({config.season_length, *config.lags})


def period_steps(config: ForecastConfig) -> tuple[int, int]:
    """(validation steps, test steps), each the horizon when left at 0."""
    return config.valid_steps or config.horizon, config.test_steps or config.horizon


def period_start(length: int, config: ForecastConfig, split: str) -> int:
    """The index of a series' first step in ``split``'s period (train: 0)."""
    valid, test = period_steps(config)
    starts = {"train": 0, "valid": length - valid - test, "test": length - test}
    return starts[split]


def origins(series: Series, config: ForecastConfig, split: str) -> list[int]:
    """Forecast origins (index of the first forecast step) of one series in ``split``:
    training windows start at every step whose horizon ends before the validation period;
    validation and test origins roll through their period every ``origin_stride`` steps."""
    length, horizon = len(series), config.horizon
    valid_start = period_start(length, config, "valid")
    if valid_start - horizon < config.context_length:
        raise S2SError(
            f"series {series.id!r}: {length} steps cannot hold forecast.context_length "
            f"{config.context_length}, a training horizon and the validation and test periods"
        )
    if split == "train":
        return list(range(config.context_length, valid_start - horizon + 1))
    start = period_start(length, config, split)
    end = start + period_steps(config)[0 if split == "valid" else 1]
    stride = config.origin_stride or horizon
    return list(range(start, end - horizon + 1, stride))


@dataclass
class WindowBatch:
    """Windows of several series, on one device; values are unscaled."""

    context: Tensor  # [B, C]
    context_features: Tensor  # [B, C, F]
    future_features: Tensor  # [B, H, F]
    lags: Tensor  # [B, H, P]: the seasonal-naive value of each step, per lag period
    target: Tensor  # [B, H] (NaN where unknown: forecasting past the data)

    def to(self, device: torch.device) -> WindowBatch:
        return WindowBatch(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.context, self.context_features, self.future_features, self.lags, self.target)

    @property
    def num_tgt_tokens(self) -> int:
        """Forecast values: the normaliser of the summed loss."""
        return self.target.numel()


def seasonal_naive(context: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """The value one (or more) whole periods before each of the next ``horizon`` steps,
    read from ``context`` only."""
    steps = np.arange(horizon)
    back = period * (steps // period + 1)  # the nearest whole number of periods in the past
    return context[len(context) - back + steps]


def window_arrays(series: Series, origin: int, config: ForecastConfig) -> tuple[np.ndarray, ...]:
    """One window's arrays; only ``features`` (known in advance) and the target are read
    at or after ``origin``; the target is NaN past the end of the series."""
    context_length, horizon = config.context_length, config.horizon
    context = series.values[origin - context_length : origin]
    target = np.full(horizon, np.nan, np.float32)
    known = series.values[origin : origin + horizon]
    target[: len(known)] = known
    features = series.features[origin - context_length : origin + horizon]
    lags = np.stack([seasonal_naive(context, horizon, p) for p in lag_periods(config)], axis=1)
    return context, features[:context_length], features[context_length:], lags, target


def collate_windows(windows: list[tuple[Series, int]], config: ForecastConfig) -> WindowBatch:
    """The batch of (series, origin) windows."""
    arrays = [window_arrays(series, origin, config) for series, origin in windows]
    stacked = [torch.from_numpy(np.stack(column)) for column in zip(*arrays, strict=True)]
    return WindowBatch(*stacked)


def in_batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def batch_count(items: int, size: int) -> int:
    return math.ceil(items / size)
