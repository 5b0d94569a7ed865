"""TensorBoard scalars for a training run, written under ``RUN/tensorboard``.

Per-step values (loss, gradient norm) are summed on the device and read back only every
``train.log_every`` steps, so logging adds no host-device synchronisation to a step.
TensorBoard is optional: without the package, training goes on after one warning line.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("s2s.train")

TRAIN_TAGS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second")
# metrics.jsonl key -> TensorBoard tag; any other valid_* key (the task metric) goes to valid/*
VALID_TAGS = {"valid_loss": "valid/loss", "valid_ppl": "valid/ppl"}


def open_writer(folder: Path, purge_step: int | None) -> Any | None:
    """A SummaryWriter, or None (after one warning) when tensorboard is not installed.

    Readers drop earlier events from ``purge_step`` on: those a killed run wrote after its
    last checkpoint, which the resumed run writes again, so the curves do not fold back.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning(
            "tensorboard is not installed, so TensorBoard logging is off "
            "(pip install 'tensorboard>=2.14', or set train.tensorboard = false)"
        )
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


class TrainingBoard:
    """Accumulates training scalars between logging steps and writes them to TensorBoard."""

    def __init__(self, writer: Any | None, log_every: int) -> None:
        self.writer = writer
        self.log_every = log_every
        self.lr = 0.0
        self._reset()
        self.last_step_end = self.window_start

    @classmethod
    def for_run(cls, folder: Path, enabled: bool, log_every: int, step: int) -> TrainingBoard:
        """The board of a run directory; a no-op board when disabled or unavailable."""
        # events up to ``step`` are in the checkpoint resumed from; later ones are replayed
        writer = open_writer(folder, purge_step=step + 1 if step else None) if enabled else None
        return cls(writer, log_every)

    def _reset(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.grad_norm_sum: torch.Tensor | float = 0.0
        self.tokens = 0
        self.steps = 0
        self.window_start = time.perf_counter()

    def add(self, loss_sum: torch.Tensor, tokens: int, grad_norm: torch.Tensor | None) -> None:
        """Add a finite step's summed loss, target tokens and gradient norm (no sync)."""
        if self.writer is None:
            return
        self.loss_sum = self.loss_sum + loss_sum.detach()
        if grad_norm is not None:
            self.grad_norm_sum = self.grad_norm_sum + grad_norm.detach()
        self.tokens += tokens
        self.steps += 1

    def end_step(self, step: int, lr: float) -> None:
        """Called after every optimiser step; writes the window every ``log_every`` steps."""
        self.lr = lr
        if step % self.log_every == 0:
            self.flush_window(step)
        self.last_step_end = time.perf_counter()

    def flush_window(self, step: int) -> None:
        """Write the mean loss and gradient norm, the rate and tokens/s since the last write."""
        if self.writer is None or self.steps == 0:
            return
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        self.writer.add_scalar("train/loss", float(self.loss_sum) / max(self.tokens, 1), step)
        self.writer.add_scalar("train/lr", self.lr, step)
        self.writer.add_scalar("train/grad_norm", float(self.grad_norm_sum) / self.steps, step)
        self.writer.add_scalar("train/tokens_per_second", self.tokens / seconds, step)
        self._reset()

    def validation(self, record: dict[str, Any]) -> None:
        """Write a metrics.jsonl record's validation scores (loss, perplexity, task metric)."""
        if self.writer is None:
            return
        # validation is not training time: leave it out of the next tokens/s
        self.window_start += time.perf_counter() - self.last_step_end
        step = record["step"]
        for key, value in record.items():
            if not key.startswith("valid_") or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                tag = VALID_TAGS.get(key, "valid/" + key.removeprefix("valid_"))
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self, step: int) -> None:
        """Write what the last window holds and close the event file."""
        if self.writer is None:
            return
        self.flush_window(step)
        self.writer.close()
        self.writer = None
