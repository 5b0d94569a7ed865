"""Validation scores of a forecaster, one function for training and `s2s average`, so a
checkpoint scored again compares equal to its record: the mean loss per value over the
validation windows (teacher-forced, as training computes it) and the MASE of the medians
forecast without reading the targets."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from s2s.config import Config
from s2s.run.directory import RunDir
from s2s.tasks.forecasting.heads import head_loss
from s2s.tasks.forecasting.metrics import mase_scales
from s2s.tasks.forecasting.model import Forecaster
from s2s.tasks.forecasting.series import Series, read_series
from s2s.tasks.forecasting.windows import collate_windows, in_batches, origins


class ValidScores(NamedTuple):
    loss: float  # mean per value
    values: int
    mase: float


def split_windows(series: list[Series], config: Config, split: str) -> list[tuple[int, int]]:
    """(series number, origin) of every window of ``split``."""
    return [(n, o) for n, s in enumerate(series) for o in origins(s, config.forecast, split)]


@torch.inference_mode()
def validation_scores(
    model: Forecaster,
    series: list[Series],
    config: Config,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> ValidScores:
    """The loss and MASE of ``model`` over the validation windows of ``series``."""
    model.eval()
    kind = config.forecast.loss
    windows = split_windows(series, config, "valid")
    total, count = 0.0, 0
    errors, steps = np.zeros(len(series)), np.zeros(len(series))
    for pairs in in_batches(windows, 256):
        batch = collate_windows([(series[n], o) for n, o in pairs], config.forecast).to(device)
        with autocast():
            raw, scale = model(batch)
            total += float(head_loss(raw, scale.apply(batch.target), kind))
            raw, scale = model.predict(batch)
        count += batch.num_tgt_tokens
        error = (scale.undo(raw[..., 0]) - batch.target).abs().sum(dim=1).float().cpu().numpy()
        for (n, _), value in zip(pairs, error, strict=True):
            errors[n] += value
            steps[n] += batch.target.size(1)
    scales = mase_scales(series, config.forecast, "valid")
    mase = float(np.mean((errors / np.maximum(steps, 1) / scales)[steps > 0]))
    return ValidScores(total / max(count, 1), count, mase)


def score_forecaster_checkpoint(run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
    """`s2s average`: a checkpoint's validation scores, as training logs them."""
    from s2s.kernels.precision import autocast_factory, resolve_amp
    from s2s.tasks.forecasting.loading import load_forecaster
    from s2s.train.validation import loss_scores

    config, model, torch_device, _ = load_forecaster(run.path, checkpoint, device)
    series = read_series(Path(config.data["train"].path), config.forecast)
    autocast = autocast_factory(resolve_amp(config.train.amp, torch_device), torch_device)
    result = validation_scores(model, series, config, torch_device, autocast)
    return {**loss_scores(result.loss, perplexity=False), "valid_mase": round(result.mase, 4)}
