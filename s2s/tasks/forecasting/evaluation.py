"""`s2s evaluate` for a forecaster: rolling origins through the split's period, the model's
MASE, sMAPE, CRPS and interval coverage beside the baselines' on the same windows."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from s2s.config import Config
from s2s.errors import S2SError
from s2s.scores import Score
from s2s.tasks.forecasting import baselines
from s2s.tasks.forecasting.heads import point, sample
from s2s.tasks.forecasting.loading import load_forecaster
from s2s.tasks.forecasting.metrics import Tally, mase_scales
from s2s.tasks.forecasting.model import Forecaster
from s2s.tasks.forecasting.series import Series, read_series
from s2s.tasks.forecasting.windows import collate_windows, in_batches, origins

log = logging.getLogger("s2s.forecast")


@torch.inference_mode()
def model_quantiles(
    model: Forecaster, batch, config: Config, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median [B, H], interval bounds [B, H] each, and samples [S, B, H], unscaled."""
    forecast = config.forecast
    raw, scale = model.predict(batch.to(device))
    drawn = scale.undo(
        sample(raw, forecast.loss, forecast.num_samples, config.train.seed).permute(1, 2, 0)
    )
    tail = (1 - forecast.interval) / 2
    levels = torch.tensor([tail, 1 - tail], device=drawn.device, dtype=drawn.dtype)
    lower, upper = torch.quantile(drawn, levels, dim=-1)
    median = scale.undo(point(raw))
    samples = drawn.permute(2, 0, 1)
    return tuple(t.cpu().numpy() for t in (median, lower, upper, samples))  # type: ignore[return-value]


def score_windows(
    model: Forecaster, series: list[Series], config: Config, split: str, device: torch.device
) -> dict[str, Tally]:
    """Every forecaster's tally over the split's rolling-origin windows."""
    forecast = config.forecast
    windows = [(n, o) for n, s in enumerate(series) for o in origins(s, forecast, split)]
    names = ["model", "naive", "seasonal naive"]
    with_ets = baselines.statsmodels_available()
    if with_ets:
        names.append("ets")
    else:
        log.warning(baselines.ETS_MISSING)
    tallies = {name: Tally(len(series)) for name in names}
    horizon, period = forecast.horizon, forecast.season_length
    for pairs in in_batches(windows, 128):
        batch = collate_windows([(series[n], o) for n, o in pairs], forecast)
        median, lower, upper, samples = model_quantiles(model, batch, config, device)
        for row, (n, origin) in enumerate(pairs):
            actual = series[n].values[origin : origin + horizon].astype(np.float64)
            history = series[n].values[:origin].astype(np.float64)
            if forecast.loss == "mse":  # a point: no spread, no interval to cover
                tallies["model"].add(n, actual, median[row])
            else:
                bounds = (lower[row], upper[row])
                tallies["model"].add(n, actual, median[row], samples[:, row], bounds)
            tallies["naive"].add(n, actual, baselines.naive(history, horizon))
            tallies["seasonal naive"].add(n, actual, baselines.seasonal(history, horizon, period))
            if with_ets:
                tallies["ets"].add(n, actual, baselines.ets(history, horizon, period))
    return tallies


def table_row(name: str, scores: dict[str, float]) -> str:
    coverage = "-" if math.isnan(scores["coverage"]) else f"{100 * scores['coverage']:.1f}%"
    return (
        f"{name:<15} MASE {scores['mase']:.3f}  sMAPE {scores['smape']:.2f}  "
        f"CRPS {scores['crps']:.4f}  coverage {coverage}"
    )


def evaluate_forecaster(
    run_dir: Path, split: str, checkpoint: Path | None, device: str
) -> list[Score]:
    """The model and the baselines on ``split``'s rolling origins, recorded for `s2s info`."""
    from s2s.run.evaluations import record_evaluation

    config, model, torch_device, used = load_forecaster(run_dir, checkpoint, device)
    if split not in ("valid", "test"):
        raise S2SError(f"--split {split!r}: a forecasting run is evaluated on valid or test")
    series = read_series(Path(config.data["train"].path), config.forecast)
    tallies = score_windows(model, series, config, split, torch_device)
    scales = mase_scales(series, config.forecast, split)
    forecast = config.forecast
    signature = (
        f"{split} period, origins every {forecast.origin_stride or forecast.horizon} steps, "
        f"horizon {forecast.horizon}, {len(series)} series, MASE season {forecast.season_length}, "
        f"{round(100 * forecast.interval)}% interval, {used.name}"
    )
    scores = []
    for name, tally in tallies.items():
        values = tally.scores(scales)
        key = "" if name == "model" else "_" + name.replace(" ", "_")
        note = signature if name == "model" else "the same windows as the model"
        scores.append(Score(f"mase{key}", values["mase"], note, table_row(name, values)))
        if name == "model":
            for metric in ("smape", "crps", "coverage"):
                scores.append(Score(metric, values[metric], signature, ""))
    record_evaluation(run_dir, split, used, None, [s for s in scores if not math.isnan(s.score)])
    return [s for s in scores if s.text]
