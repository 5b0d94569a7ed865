"""AMP against fp32 training of one recipe on one machine: throughput and validation loss.

    python tools/amp_check.py --device cuda --json amp.json      # recipes/mt.toml
    python tools/amp_check.py --device cpu --amp bf16 --steps 300 --valid-every 100

The speed issue's GPU target is AMP training at least 1.5x as fast as fp32 with a
validation loss within 1 % of fp32's. This trains the recipe twice in fresh run
directories, from the same seed and data order: once with `train.amp = "off"` and once
with --amp ("auto": bf16 autocast where the GPU supports it, fp16 with a gradient scaler
otherwise), --steps optimiser steps each, validating every --valid-every steps (loss only,
no decoding). It compares

- throughput: the median over the validation windows of target tokens/s (s2s train's own
  `tokens_per_second`, validation excluded), the first window left out: kernel selection,
  cuDNN's autotuning and the allocator's warm-up happen there;
- the validation loss at every validation, and its relative difference at the last;
- on CUDA, the peak memory of tensors.

It prints a table and, with --json, writes every number. Where the two runs diverge the
per-validation losses say when. The run directories are kept with --work-dir DIR.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_machine import machine_info
from bench_output import json_path
from bench_train import build_trainer

from s2s.errors import S2SError
from s2s.kernels.denormals import flush_denormals_in_script
from s2s.kernels.device import resolve_device
from s2s.kernels.precision import precision_name, resolve_amp
from s2s.run.metrics_log import read_metrics

SPEED_TARGET = 1.5  # AMP tokens/s over fp32's
LOSS_TOLERANCE = 0.01  # |AMP - fp32| / fp32 of the last validation loss


def run_overrides(args: argparse.Namespace, amp: str) -> list[str]:
    """The user's --set, then what makes the two runs comparable and quick to validate."""
    return [
        *args.set,
        f"train.amp={amp}",
        f"train.device={args.device}",
        f"train.max_steps={args.steps}",
        "train.max_epochs=1000",
        "train.max_minutes=0",
        f"train.valid_every={args.valid_every}",
        "train.valid_decode=false",
        "train.early_stopping_metric=loss",
        "train.patience=0",
        "train.tensorboard=false",
    ]


def amp_precision(amp: str, device: torch.device) -> str:
    """What --amp means on ``device``: bf16 or fp16 (fp32 would compare fp32 with itself)."""
    name = precision_name(resolve_amp(amp, device, "--amp"))
    if name == "fp32":
        raise S2SError(f"--amp {amp} is fp32 on {device.type}: use --amp bf16 there")
    return name


def train_once(
    args: argparse.Namespace, amp: str, device: torch.device, work_dir: Path
) -> dict[str, Any]:
    """Train the recipe under ``amp`` in ``work_dir``; its validation records and peak memory."""
    trainer = build_trainer(args.recipe, run_overrides(args, amp), work_dir)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    records = read_metrics(trainer.run.metrics_log)
    return {
        "amp": amp,
        "run_dir": str(work_dir),
        "validations": [
            {
                key: nan_if_none(r[key])
                for key in ("step", "valid_loss", "tokens_per_second", "train_loss")
            }
            for r in records
        ],
        "tokens_per_second": steady_speed(records),
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
    }


def nan_if_none(value: Any) -> Any:
    """A metrics-log score, NaN where the log says null (the score was not finite)."""
    return math.nan if value is None else value


def steady_speed(records: list[dict[str, Any]]) -> float:
    """Median target tokens/s over the validation windows, the first (warm-up) left out
    unless it is the only one."""
    speeds = [r["tokens_per_second"] for r in records]
    return statistics.median(speeds[1:] or speeds)


def compare(fp32: dict[str, Any], amp: dict[str, Any]) -> dict[str, Any]:
    """Speed-up and loss difference, and whether each meets the target."""
    speedup = amp["tokens_per_second"] / fp32["tokens_per_second"]
    last_fp32 = fp32["validations"][-1]["valid_loss"]
    last_amp = amp["validations"][-1]["valid_loss"]
    difference = abs(last_amp - last_fp32) / last_fp32
    return {
        "speedup": round(speedup, 3),
        "speed_target": SPEED_TARGET,
        "speed_met": speedup >= SPEED_TARGET,
        "valid_loss_relative_difference": round(difference, 5),
        "loss_tolerance": LOSS_TOLERANCE,
        "loss_met": difference <= LOSS_TOLERANCE,
    }


def table(fp32: dict[str, Any], amp: dict[str, Any], verdict: dict[str, Any]) -> str:
    """Validation losses side by side, then throughput and the verdict."""
    name = amp["precision"]
    lines = [f"| step | valid loss, fp32 | valid loss, {name} |", "|---:|---:|---:|"]
    for a, b in zip(fp32["validations"], amp["validations"], strict=False):
        lines.append(f"| {a['step']} | {a['valid_loss']:.4f} | {b['valid_loss']:.4f} |")
    speed = (
        f"target tok/s: fp32 {fp32['tokens_per_second']:.0f}, {name} "
        f"{amp['tokens_per_second']:.0f}: {verdict['speedup']:.2f}x "
        f"({'meets' if verdict['speed_met'] else 'below'} the {SPEED_TARGET}x target)"
    )
    loss = (
        f"last valid loss differs by {100 * verdict['valid_loss_relative_difference']:.2f} % "
        f"({'within' if verdict['loss_met'] else 'outside'} {100 * LOSS_TOLERANCE:.0f} %)"
    )
    lines += ["", speed, loss]
    if fp32["peak_memory_mib"] is not None:
        memory = (fp32["peak_memory_mib"], amp["peak_memory_mib"])
        lines.append(f"peak memory of tensors: fp32 {memory[0]} MiB, {name} {memory[1]} MiB")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/mt.toml"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16"), default="auto")
    parser.add_argument("--steps", type=int, default=1200, help="optimiser steps per run")
    parser.add_argument("--valid-every", type=int, default=200)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe key for both runs, as s2s train --set (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0: torch's default")
    parser.add_argument("--work-dir", type=Path, help="keep the two run directories here")
    parser.add_argument("--json", type=json_path, help="also write every number here")
    args = parser.parse_args(argv)
    if args.steps < 2 * args.valid_every:
        parser.error("--steps must allow two validations (at least 2 x --valid-every)")
    if not args.recipe.is_file():
        parser.error(f"{args.recipe}: recipe not found")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="s2s-amp-check-") as scratch:
        root = args.work_dir or Path(scratch)
        try:
            device = resolve_device(args.device)
            precision = amp_precision(args.amp, device)
            fp32 = train_once(args, "off", device, root / "fp32")
            amp = train_once(args, args.amp, device, root / "amp")
        except S2SError as error:
            print(f"amp_check: {error}", file=sys.stderr)
            return error.exit_code
    amp["precision"] = precision
    verdict = compare(fp32, amp)
    print(table(fp32, amp, verdict))
    if args.json:
        results = {
            "machine": machine_info(device),
            "command": shlex.join(["python", "tools/amp_check.py", *(argv or sys.argv[1:])]),
            "fp32": fp32,
            "amp": amp,
            "verdict": verdict,
        }
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    flush_denormals_in_script("amp_check")  # as s2s does, before torch starts its threads
    sys.exit(main())
