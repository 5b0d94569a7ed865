"""Gradient clipping inside the fused optimiser step, against clipping before it.

    python tools/bench_clip.py                        # the peer benchmark model
    python tools/bench_clip.py --threads 2 --rounds 8 --json clip.json

Times the end of a training step on the parameters of the peer benchmark model
(`bench.PEER_MODEL`: 8 000-word vocabularies, clipping at 5), with gradients whose norm is
above the clip: ``clip_grad_norm_`` and then the fused AdamW step (what a non-fused
optimiser still does), against the norm alone and the fused step taking the clip factor as
its gradient divisor (`s2s.train.faults.clip_divisor`, what training does with a fused
optimiser). Rounds alternate the two; each round times --steps steps and the gradients are
set again, untimed, before every step. Prints the minimum and median of the rounds'
per-step times. Time on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from bench import PEER_MODEL
from bench_output import json_path

from s2s.config import ModelConfig, TrainConfig, apply_overrides
from s2s.core.cell_registry import side_cells
from s2s.core.seq2seq import Seq2Seq
from s2s.data.tokenizer import PAD_ID
from s2s.train.faults import clip_divisor, grad_norm, step_unless
from s2s.train.trainer import make_optimizer

VOCABULARY = 8000


def peer_model_and_training() -> tuple[Seq2Seq, TrainConfig]:
    """The peer benchmark model (no data needed) and its training settings."""
    raw = apply_overrides({}, [o for o in PEER_MODEL if not o.startswith("tokenizer.")])
    model_config, train_config = ModelConfig(**raw["model"]), TrainConfig(**raw["train"])
    make_cell = side_cells(model_config)
    model = Seq2Seq(model_config, make_cell, VOCABULARY, VOCABULARY, PAD_ID, share_vocab=False)
    return model, train_config


def time_steps(
    step: Callable[[], None], params: list[torch.nn.Parameter], grads: list, steps: int
) -> float:
    """Milliseconds per call of ``step``, with ``grads`` copied in before each call."""
    total = 0.0
    for _ in range(steps):
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad.clone()
        start = time.perf_counter()
        step()
        total += time.perf_counter() - start
    return total / steps * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="alternated rounds of each way")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--json", type=json_path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, train = peer_model_and_training()
    params = list(model.parameters())
    optimizer = make_optimizer(model, train)
    clip = train.clip_norm
    # gradients ten times the clip: clipping scales every one of them
    grads = [torch.randn_like(p) for p in params]
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    grads = [g * (10 * clip / norm) for g in grads]
    no_skip = torch.tensor(False)

    def clip_first() -> None:
        grad_norm(params, clip)  # clip_grad_norm_
        step_unless(optimizer, no_skip)

    def clip_in_step() -> None:
        step_unless(optimizer, no_skip, clip_divisor(grad_norm(params, 0.0), clip))

    ways = {"clip first": clip_first, "clip in step": clip_in_step}
    times: dict[str, list[float]] = {name: [] for name in ways}
    time_steps(clip_first, params, grads, 2)  # warm-up: the optimiser's state is created
    for _ in range(args.rounds):
        for name, way in ways.items():
            times[name].append(time_steps(way, params, grads, args.steps))
    count = sum(p.numel() for p in params)
    print(f"{count / 1e6:.1f} M parameters, {torch.get_num_threads()} threads, ms per step")
    results = {}
    for name, values in times.items():
        results[name] = {"min_ms": min(values), "median_ms": statistics.median(values)}
        print(f"{name:>14}: min {min(values):7.2f}  median {statistics.median(values):7.2f}")
    if args.json:
        payload = {"parameters": count, "threads": torch.get_num_threads(), **results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
