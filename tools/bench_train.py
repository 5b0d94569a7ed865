"""Training throughput through s2s's own training path, for tools/bench.py.

A real `s2s.train.trainer.Trainer` is built in a scratch run directory from a recipe and
``--set``-style overrides; the benchmark then drives its `_train_step` over batches from
its own `_epoch_batches` and `_collate`, exactly as `Trainer._run` does but without
validation, logging or checkpoints. Collation is inside the timed region, as it is in
real training. Target tokens are the non-pad tokens of the output side (EOS counted, BOS
not), which is how OpenNMT-py and Joey NMT count the tokens/s they log.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_machine import OtherLoad, PeakMemory, synchronize

from s2s.errors import S2SError
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer


class SentenceBatchTrainer(TranslationTrainer):
    """A TranslationTrainer whose batches hold a fixed number of sentences (the peers' ``batch_size:
    64, batch_type: sents``) instead of a token budget: examples sorted by length (ties at
    random) so padding stays small, cut into groups, the groups shuffled every epoch."""

    batch_sentences = 64

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.config.train.seed * 100_003 + epoch)
        data, size = self.train_data, self.batch_sentences
        noise = {i: rng.random() for i in self.train_indices}
        order = sorted(
            self.train_indices, key=lambda i: (len(data.tgt[i]), len(data.src[i]), noise[i])
        )
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        rng.shuffle(batches)
        return batches


def build_trainer(
    recipe: Path, overrides: list[str], work_dir: Path, batch_sentences: int = 0
) -> TranslationTrainer:
    """A TranslationTrainer for ``recipe`` with ``overrides`` in ``work_dir`` (its tokeniser and
    tokenised-data cache are reused when the directory is reused); ``batch_sentences`` > 0
    batches by sentence count instead of ``train.max_tokens``."""
    config = load_config(recipe, overrides)
    if config.task.type != "translation":
        raise S2SError(f"{recipe}: the benchmark measures translation recipes only")
    run = RunDir(work_dir)
    if run.last_checkpoint.is_file():
        raise S2SError(f"{work_dir}: holds a training checkpoint; use an empty --work-dir")
    if batch_sentences:
        trainer_class = type(
            "SentenceBatchTrainer", (SentenceBatchTrainer,), {"batch_sentences": batch_sentences}
        )
        return trainer_class(config, run, quiet=True)
    return TranslationTrainer(config, run, quiet=True)


@dataclass
class StepSource:
    """Walks a trainer's epochs batch group by batch group, as `Trainer._run` does."""

    trainer: TranslationTrainer
    epoch: int = 0
    position: int = 0
    batches: list[list[int]] = field(default_factory=list)

    def next_group(self) -> list[list[int]]:
        if self.position >= len(self.batches):
            self.batches = self.trainer._epoch_batches(self.epoch)
            self.epoch += 1
            self.position = 0
        accum = self.trainer.config.train.accum_steps
        group = self.batches[self.position : self.position + accum]
        self.position += len(group)
        return group


def run_steps(trainer: TranslationTrainer, source: StepSource, steps: int) -> tuple[int, int]:
    """Take ``steps`` optimiser steps; returns (target tokens, sentences) seen."""
    tokens = sentences = 0
    for _ in range(steps):
        collated = [trainer._collate(indices) for indices in source.next_group()]
        trainer._train_step(collated)
        trainer.progress.step += 1
        tokens += sum(batch.num_tgt_tokens for batch in collated)
        sentences += sum(len(batch.indices) for batch in collated)
    return tokens, sentences


def measure_training(
    trainer: TranslationTrainer, source: StepSource, steps: int, warmup: int, window: int
) -> dict[str, Any]:
    """Target tokens/s over ``steps`` timed steps after ``warmup`` untimed ones.

    ``tokens_per_second`` pools all timed steps (total tokens / total time); the timed
    steps are also cut into windows of ``window`` steps, whose median and range show how
    steady the rate was. Peak memory covers the timed steps."""
    trainer.model.train()
    device = trainer.device
    run_steps(trainer, source, warmup)
    synchronize(device)
    windows: list[float] = []
    total_tokens = total_sentences = 0
    total_seconds = 0.0
    with PeakMemory(device) as memory, OtherLoad() as load:
        left = steps
        while left > 0:
            count = min(window, left)
            start = time.perf_counter()
            tokens, sentences = run_steps(trainer, source, count)
            synchronize(device)
            seconds = time.perf_counter() - start
            windows.append(tokens / seconds)
            total_tokens += tokens
            total_sentences += sentences
            total_seconds += seconds
            left -= count
    return {
        "tokens_per_second": round(total_tokens / total_seconds, 1),
        "window_median_tokens_per_second": round(statistics.median(windows), 1),
        "window_min_tokens_per_second": round(min(windows), 1),
        "window_max_tokens_per_second": round(max(windows), 1),
        "window_steps": window,
        "steps_per_second": round(steps / total_seconds, 3),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "seconds": round(total_seconds, 2),
        "target_tokens": total_tokens,
        "mean_sentences_per_batch": round(total_sentences / (steps * _accum(trainer)), 1),
        "mean_target_tokens_per_step": round(total_tokens / steps, 1),
        "peak_memory_mib": memory.mib,
        "memory_measure": memory.method,
        "other_processes_cpu_share": load.share,
        "amp": str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else "off",
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "model": trainer.config.model.model_dump(mode="json"),
        "train": _train_summary(trainer),
        "vocab": {
            "src": trainer.tokenizers.src.vocab_size,
            "tgt": trainer.tokenizers.tgt.vocab_size,
        },
    }


def _accum(trainer: TranslationTrainer) -> int:
    return trainer.config.train.accum_steps


def _train_summary(trainer: TranslationTrainer) -> dict[str, Any]:
    cfg = trainer.config.train
    keys = "max_tokens accum_steps optimizer lr weight_decay schedule warmup_steps clip_norm"
    keys += " label_smoothing max_length amp seed"
    summary = {k: getattr(cfg, k) for k in keys.split()}
    summary["betas"] = list(cfg.betas)
    batch_sentences = getattr(trainer, "batch_sentences", 0)
    summary["batching"] = f"{batch_sentences} sentences" if batch_sentences else "max_tokens"
    return summary


def train_until(trainer: TranslationTrainer, source: StepSource, total_steps: int) -> None:
    """Carry on training (untimed) until ``total_steps`` optimiser steps were taken."""
    trainer.model.train()
    left = total_steps - trainer.progress.step
    if left > 0:
        run_steps(trainer, source, left)
    synchronize(trainer.device)
