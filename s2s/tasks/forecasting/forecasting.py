"""`s2s forecast` and the pictures of `s2s plot --forecast`: forecasts with their median
and central interval, from the end of each series of a file, or from the rolling origins
of a run's test period."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from s2s.config import Config
from s2s.errors import S2SError
from s2s.tasks.forecasting.evaluation import model_quantiles
from s2s.tasks.forecasting.loading import load_forecaster
from s2s.tasks.forecasting.model import Forecaster
from s2s.tasks.forecasting.series import Series, read_series, time_features
from s2s.tasks.forecasting.windows import collate_windows, in_batches, origins


@dataclass
class Forecast:
    """One series' forecast from one origin, unscaled; ``actual`` is NaN past the data."""

    series: str
    times: np.ndarray  # [H] datetime64
    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    actual: np.ndarray


def extended(series: Series, horizon: int, config: Config) -> Series:
    """The series with ``horizon`` unknown steps appended (NaN values; time features)."""
    future = series.times[-1] + series.step * np.arange(1, horizon + 1)
    times = np.concatenate([series.times, future])
    features = (
        time_features(times)
        if config.forecast.time_features
        else np.zeros((len(times), 0), np.float32)
    )
    values = np.concatenate([series.values, np.full(horizon, np.nan, np.float32)])
    return Series(series.id, times, values, features, series.step)


def forecasts_at(
    model: Forecaster, config: Config, windows: list[tuple[Series, int]], device: torch.device
) -> list[Forecast]:
    """The forecast of every (series, origin) window."""
    horizon = config.forecast.horizon
    results = []
    for chunk in in_batches(windows, 128):
        median, lower, upper, _ = model_quantiles(
            model, collate_windows(chunk, config.forecast), config, device
        )
        for row, (series, origin) in enumerate(chunk):
            times = series.times[origin : origin + horizon]
            actual = series.values[origin : origin + horizon]
            results.append(Forecast(series.id, times, median[row], lower[row], upper[row], actual))
    return results


def forecast_file(
    run_dir: Path, input_path: Path, horizon: int | None, checkpoint: Path | None, device: str
) -> tuple[Config, list[Forecast]]:
    """Forecasts of ``horizon`` steps (at most the trained horizon) after the end of every
    series of ``input_path``."""
    config, model, torch_device, _ = load_forecaster(run_dir, checkpoint, device)
    forecast = config.forecast
    steps = horizon or forecast.horizon
    if steps > forecast.horizon:
        raise S2SError(f"--horizon {steps}: the run forecasts at most {forecast.horizon} steps")
    if forecast.covariates:
        raise S2SError(
            f"{run_dir}: the run reads covariates ({', '.join(forecast.covariates)}) whose "
            "future values s2s forecast cannot know yet; only time features are supported"
        )
    windows = []
    for series in read_series(input_path, forecast):
        if len(series) < forecast.context_length:
            raise S2SError(
                f"{input_path}: series {series.id!r} has {len(series)} steps; the run reads "
                f"the last {forecast.context_length} (forecast.context_length)"
            )
        windows.append((extended(series, forecast.horizon, config), len(series)))
    results = forecasts_at(model, config, windows, torch_device)
    for result in results:
        for name in ("times", "median", "lower", "upper", "actual"):
            setattr(result, name, getattr(result, name)[:steps])
    return config, results


def write_csv(config: Config, forecasts: list[Forecast], out: TextIO) -> None:
    """One row per series and step: id, time, median and the interval's bounds."""
    forecast = config.forecast
    percent = round(100 * forecast.interval)
    writer = csv.writer(out, lineterminator="\n")
    id_column = forecast.id_column or "series"
    writer.writerow(
        [id_column, forecast.time_column, "median", f"lower_{percent}", f"upper_{percent}"]
    )
    for result in forecasts:
        for k, time in enumerate(result.times):
            stamp = np.datetime_as_string(time, unit="s").replace("T", " ")
            values = (result.median[k], result.lower[k], result.upper[k])
            writer.writerow([result.series, stamp, *(f"{float(v):.6g}" for v in values)])


def period_forecasts(
    run_dir: Path, checkpoint: Path | None, device: str, split: str = "test"
) -> tuple[list[Series], list[Forecast], Config]:
    """The run's series and its forecasts from every origin of ``split`` (for pictures)."""
    config, model, torch_device, _ = load_forecaster(run_dir, checkpoint, device)
    series = read_series(Path(config.data["train"].path), config.forecast)
    windows = [(s, o) for s in series for o in origins(s, config.forecast, split)]
    return series, forecasts_at(model, config, windows, torch_device), config
