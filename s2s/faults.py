"""Faults of one training step: non-finite losses or gradients, and running out of memory.

A step whose loss or gradient norm is not finite is skipped (under fp16 the gradient scaler
skips it and lowers its scale); too many in a row stop the run, naming the batch. The check
reuses the gradient norm that clipping computes anyway, adds the loss to it on the device and
reads that one scalar: one host-device sync per step and no extra pass over the gradients
(under fp16 the gradient scaler syncs once per step for its own check anyway).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from s2s.errors import S2SError

log = logging.getLogger("s2s.train")


def grad_norm(parameters: Iterable[torch.nn.Parameter], clip_norm: float) -> torch.Tensor:
    """The global gradient norm, clipping to ``clip_norm`` when it is positive (a 0-dim
    tensor on the parameters' device; inf or nan when any gradient is)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip_norm)
    grads = [p.grad.detach() for p in params if p.grad is not None]
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is not None:
        return total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def step_is_finite(loss: torch.Tensor, norm: torch.Tensor) -> bool:
    """One sync for both checks: a nan/inf loss usually gives nan gradients, but not always."""
    return bool(torch.isfinite(loss.float() + norm.float().to(loss.device)))


@dataclass(frozen=True)
class BatchPlace:
    """Where a step's data came from, for messages: epoch, batch range and corpus lines."""

    epoch: int
    first_batch: int
    last_batch: int
    lines: tuple[int, ...]

    def describe(self) -> str:
        batches = (
            f"batch {self.first_batch}"
            if self.first_batch == self.last_batch
            else f"batches {self.first_batch}-{self.last_batch}"
        )
        shown = ", ".join(str(n) for n in self.lines[:5])
        more = f" and {len(self.lines) - 5} more" if len(self.lines) > 5 else ""
        return f"epoch {self.epoch}, {batches} (training lines {shown}{more})"


def skipped_step(bad_steps: int, max_bad_steps: int, step: int, place: BatchPlace) -> None:
    """Warn about a skipped step; raise once more than ``max_bad_steps`` came in a row."""
    if bad_steps > max_bad_steps:
        raise S2SError(
            f"stopping: {bad_steps} steps in a row had a non-finite loss or gradient, the last "
            f"at step {step}, {place.describe()}; the last checkpoint is kept (check the data "
            "there, or lower train.lr; train.max_bad_steps sets the limit)"
        )
    log.warning(
        "step %d: non-finite loss or gradient, step skipped (%s; %d in a row)",
        step,
        place.describe(),
        bad_steps,
    )


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    # the CPU allocator reports exhaustion as a plain RuntimeError
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


@contextlib.contextmanager
def out_of_memory_hint(max_tokens: int, where: Callable[[], str]) -> Iterator[None]:
    """Turn running out of memory into a one-line error that says what to lower."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not _is_out_of_memory(error):
            raise
        smaller = max(max_tokens // 2, 1)
        raise S2SError(
            f"out of memory {where()} with train.max_tokens = {max_tokens}: try a smaller batch, "
            f"e.g. --set train.max_tokens={smaller} (the last checkpoint is kept; "
            "run the same command to resume from it)"
        ) from None
