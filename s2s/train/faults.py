"""Faults of one training step: non-finite losses or gradients, and running out of memory.

A step whose loss or gradient norm is not finite is skipped (under fp16 the gradient scaler
also lowers its scale); too many in a row stop the run, naming the batch. The check reuses the
gradient norm that clipping computes anyway and adds the loss to it on the device: no extra
pass over the gradients. With a fused optimiser (AdamW, SGD on CPU and CUDA) the flag goes to
the optimiser the way torch's GradScaler passes its own (``found_inf``), which leaves weights,
moments and step count untouched on a bad step without the host reading anything; the flags
of recent steps wait on the device in `StepChecks` and are read together when the trainer
logs, validates, saves or ends, so warnings and the "N in a row" stop come at most
``train.log_every`` steps late. Other optimisers read the flag at once (one sync per step).
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


def nonfinite(loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor on the loss's device, true when the loss or the gradient norm is
    nan or inf (a nan/inf loss usually gives nan gradients, but not always); no sync."""
    return ~torch.isfinite(loss.float() + norm.float().to(loss.device))


def step_is_finite(loss: torch.Tensor, norm: torch.Tensor) -> bool:
    """One sync for both checks."""
    return not bool(nonfinite(loss, norm))


def supports_skip_flag(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` reads a ``found_inf`` flag and skips on it by itself
    (torch's fused optimisers: the protocol torch.amp.GradScaler uses)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def clip_divisor(norm: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """What `torch.nn.utils.clip_grad_norm_` would scale gradients of global ``norm`` by,
    inverted (a divisor of at least 1): a fused step divides by it as it reads them."""
    return ((norm + 1e-6) / clip_norm).clamp(min=1.0)


def step_unless(
    optimizer: torch.optim.Optimizer, bad: torch.Tensor, grad_divisor: torch.Tensor | None = None
) -> None:
    """Take the optimiser step unless ``bad`` (on the device) is true, without reading it:
    the fused kernel leaves parameters and moments alone and undoes its step count. With
    ``grad_divisor`` (`clip_divisor`) it also clips, in the same pass over the gradients
    (the slot GradScaler unscales through). Clipping first costs a pass of its own: 1.2 ms
    of the peer benchmark model's 330 ms fp32 step on a 2-core CPU (tools/bench_clip.py)."""
    optimizer.grad_scale = grad_divisor  # type: ignore[attr-defined]
    optimizer.found_inf = bad.to(torch.float32)  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf  # type: ignore[attr-defined]


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


@dataclass
class PendingStep:
    """A step whose non-finite flag has not been read yet, with what accounting needs."""

    step: int
    bad: torch.Tensor  # 0-dim bool, on the device
    place: BatchPlace
    extra: object = None  # returned for the steps that turn out finite


class StepChecks:
    """The non-finite flags of recent steps, kept on the device until `settle` reads them
    all with one host-device sync."""

    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.pending: list[PendingStep] = []
        self.last_finite = True

    def add(self, pending: PendingStep) -> None:
        self.pending.append(pending)

    def settle(self, bad_steps: int) -> tuple[int, list[object]]:
        """Read the pending flags in step order: warn about each skipped step and raise once
        more than ``max_bad_steps`` came in a row. Returns the new count of bad steps in a
        row and the ``extra`` of the finite steps."""
        if not self.pending:
            return bad_steps, []
        flags = torch.stack([p.bad.reshape(()) for p in self.pending]).tolist()
        pending, self.pending = self.pending, []
        finite: list[object] = []
        for entry, bad in zip(pending, flags, strict=True):
            if bad:
                bad_steps += 1
                skipped_step(bad_steps, self.max_bad_steps, entry.step, entry.place)
            else:
                bad_steps = 0
                finite.append(entry.extra)
        self.last_finite = not flags[-1]
        return bad_steps, finite


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
