"""Forecasting throughput: series-windows per second in training (forward, backward and
optimiser step through the real trainer's hooks) and in forecasting (the model's medians
and interval samples, as `s2s evaluate` and `s2s forecast` compute them).

    python tools/bench_forecast.py                       # recipes/forecast.toml, 1 thread
    python tools/bench_forecast.py --threads 2 --set model.cell=gru --json out.json

A real `ForecastingTrainer` is built from the recipe in a scratch run directory; the
timed loop drives its `_epoch_batches`, `_collate` and `_train_step` as training does,
without validation or checkpoints. The share of the CPU other processes used while each
number was taken is printed beside it (a busy shared machine slows every number).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_machine import OtherLoad, machine_info

from s2s.run.directory import RunDir
from s2s.tasks.forecasting.evaluation import model_quantiles
from s2s.tasks.forecasting.trainer import ForecastingTrainer
from s2s.tasks.forecasting.windows import collate_windows, in_batches
from s2s.tasks.recipe import load_config

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "forecast.toml")
    parser.add_argument("--set", action="append", default=[], help="recipe override")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--windows", type=int, default=1024, help="windows to forecast")
    parser.add_argument("--forecast-batch", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def train_speed(trainer: ForecastingTrainer, steps: int, warmup: int) -> dict[str, float]:
    """Training windows per second over ``steps`` optimiser steps after ``warmup``."""
    batches = trainer._epoch_batches(0)
    while len(batches) < steps + warmup:
        batches += trainer._epoch_batches(len(batches))
    trainer.model.train()
    for indices in batches[:warmup]:
        trainer._train_step([trainer._collate(indices)])
    windows = 0
    with OtherLoad() as load:
        start = time.perf_counter()
        for indices in batches[warmup : warmup + steps]:
            trainer._train_step([trainer._collate(indices)])
            windows += len(indices)
        seconds = time.perf_counter() - start
    return {"windows_per_s": round(windows / seconds, 1), "other_load": load.share or 0.0}


@torch.inference_mode()
def forecast_speed(trainer: ForecastingTrainer, count: int, batch: int) -> dict[str, float]:
    """Forecast windows per second (medians, intervals and CRPS samples)."""
    config, model = trainer.config, trainer.model.eval()
    windows = [(trainer.series[n], o) for n, o in trainer.train_windows[:count]]
    with OtherLoad() as load:
        start = time.perf_counter()
        for chunk in in_batches(windows, batch):
            model_quantiles(model, collate_windows(chunk, config.forecast), config, trainer.device)
        seconds = time.perf_counter() - start
    return {"windows_per_s": round(len(windows) / seconds, 1), "other_load": load.share or 0.0}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    overrides = [*args.set, "train.device=cpu", f"train.threads={args.threads}"]
    overrides.append("train.tensorboard=false")
    with tempfile.TemporaryDirectory(prefix="s2s-bench-forecast-") as scratch:
        config = load_config(args.recipe, overrides)
        trainer = ForecastingTrainer(config, RunDir(Path(scratch) / "run"), quiet=True)
        results = {
            "machine": machine_info(trainer.device),
            "recipe": str(args.recipe),
            "set": args.set,
            "batch_size": config.forecast.batch_size,
            "context_length": config.forecast.context_length,
            "horizon": config.forecast.horizon,
            "train": train_speed(trainer, args.steps, args.warmup),
            "forecast": forecast_speed(trainer, args.windows, args.forecast_batch),
        }
    print(
        f"train {results['train']['windows_per_s']} windows/s "
        f"(other load {results['train']['other_load']}), forecast "
        f"{results['forecast']['windows_per_s']} windows/s "
        f"(other load {results['forecast']['other_load']}); "
        f"{results['machine']['cpu']}, {args.threads} thread(s), torch {torch.__version__}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
