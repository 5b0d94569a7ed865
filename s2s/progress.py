"""Training progress: a tqdm bar on a terminal, plain periodic log lines otherwise (CI, nohup)."""

from __future__ import annotations

import sys
import time

import torch

from s2s.config import TrainConfig


class TrainingProgress:
    """Shows epoch, step, loss, tokens/s and ETA; reads the loss tensor only when it prints."""

    def __init__(self, config: TrainConfig, quiet: bool = False) -> None:
        self.config = config
        self.quiet = quiet
        self.interactive = sys.stderr.isatty() and not quiet
        self.bar = None
        self.epoch = 0
        self.started = time.perf_counter()

    def start_epoch(self, epoch: int, batches: int, done: int) -> None:
        self.epoch = epoch
        if self.interactive:
            from tqdm import tqdm

            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(
                total=batches, initial=done, desc=f"epoch {epoch}", unit="batch", file=sys.stderr
            )

    def update(
        self, step: int, batches: int, loss_sum: torch.Tensor, tokens: int, seconds: float
    ) -> None:
        if self.bar is not None:
            self.bar.update(batches)
        if step % self.config.log_every:
            return
        loss = float(loss_sum) / max(tokens, 1)
        speed = tokens / max(seconds, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(step=step, loss=f"{loss:.3f}", tok_s=f"{speed:.0f}")
        elif not self.quiet:
            minutes = (time.perf_counter() - self.started) / 60
            print(
                f"epoch {self.epoch} step {step} loss {loss:.3f} {speed:.0f} tok/s "
                f"{minutes:.1f} min",
                file=sys.stderr,
                flush=True,
            )

    def report(self, record: dict) -> None:
        if self.quiet:
            return
        parts = [f"{k} {v}" for k, v in record.items() if k.startswith("valid_")]
        line = f"validation at step {record['step']}: " + ", ".join(parts)
        if record.get("best"):
            line += " (best)"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
