"""Loading a trained forecaster: its config, its model with the chosen (default: best)
checkpoint's weights, in eval mode on a device. No tokeniser: numbers in, numbers out."""

from __future__ import annotations

from pathlib import Path

import torch

from s2s.config import Config, read_saved_config
from s2s.errors import S2SError
from s2s.kernels.device import resolve_device
from s2s.run.cell_record import check_recorded_cell
from s2s.run.directory import RunDir
from s2s.run.weights import load_model_weights
from s2s.tasks.forecasting.model import Forecaster, build_forecaster


def load_forecaster(
    run_dir: Path, checkpoint: Path | None = None, device: str = "auto"
) -> tuple[Config, Forecaster, torch.device, Path]:
    """A forecasting run's config, model (eval mode, on ``device``), device and checkpoint."""
    run = RunDir(run_dir).require()
    config = read_saved_config(run.config_file)
    if not getattr(_task(config), "forecasts", False):
        raise S2SError(f"{run_dir}: a {config.task.type} run; s2s forecast serves forecasting runs")
    check_recorded_cell(run, config)
    model = build_forecaster(config)
    used = load_model_weights(model, run, checkpoint)
    torch_device = resolve_device(device)
    return config, model.to(torch_device).eval(), torch_device, used


def _task(config: Config):
    from s2s.tasks.registry import find_task

    return find_task(config.task.type)
