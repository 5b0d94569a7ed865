"""Step checkpoints: which ones training keeps, and averaging the weights of the last N.

Training saves validated weights as ``checkpoints/step-N.pt``. It keeps the
``train.keep_best`` best of them and, with ``train.keep_last``, also the most recent ones.
Averaging the weights of the last few checkpoints of a run usually scores a little better
than any one of them, at no training cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from s2s.config import read_saved_config
from s2s.errors import S2SError
from s2s.run.checkpoint import STEP_FILE, load_checkpoint, save_checkpoint
from s2s.run.directory import RunDir
from s2s.run.lock import lock_run_directory

log = logging.getLogger(__name__)


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N.pt`` in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = STEP_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_step_checkpoints(folder: Path, keep_files: Iterable[str], keep_last: int) -> None:
    """Delete the step checkpoints that are neither in ``keep_files`` (the best) nor among
    the ``keep_last`` most recent."""
    found = step_checkpoints(folder)
    recent = {path.name for _, path in found[-keep_last:]} if keep_last else set()
    keep = set(keep_files) | recent
    for _, path in found:
        if path.name not in keep:
            path.unlink(missing_ok=True)


def average_state_dicts(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of floating-point tensors (summed in float64, returned in each
    tensor's own dtype); other tensors are taken from the last state."""
    if not states:
        raise S2SError("no checkpoints to average")
    names = list(states[-1])
    for state in states:
        if set(state) != set(names):
            raise S2SError("the checkpoints hold different tensors (another model?)")
    averaged = {}
    for name in names:
        last = states[-1][name]
        if any(state[name].shape != last.shape for state in states):
            raise S2SError(f"{name}: the checkpoints disagree on its shape")
        if not last.is_floating_point():
            averaged[name] = last.clone()
            continue
        total = torch.zeros(last.shape, dtype=torch.float64)
        for state in states:
            total += state[name].double()
        averaged[name] = (total / len(states)).to(last.dtype)
    return averaged


def select_last(folder: Path, last: int) -> list[Path]:
    """The ``last`` most recent step checkpoints, oldest first."""
    found = step_checkpoints(folder)
    if last < 1:
        raise S2SError("--last must be at least 1")
    if len(found) < last:
        have = ", ".join(path.name for _, path in found) or "none"
        raise S2SError(
            f"{folder}: asked to average {last} checkpoints but only {len(found)} step "
            f"checkpoints are kept ({have}); train with train.keep_last = {last} to keep them"
        )
    return [path for _, path in found[-last:]]


def average_checkpoints(inputs: list[Path], out: Path) -> Path:
    """Write the averaged weights of ``inputs`` to ``out``, with the newest one's config and
    progress, so `s2s translate --checkpoint` and `s2s evaluate --checkpoint` can use it."""
    if out.resolve() in {path.resolve() for path in inputs}:
        raise S2SError(f"{out}: would overwrite one of the checkpoints being averaged")
    payloads = [load_checkpoint(path) for path in inputs]
    states = []
    for path, payload in zip(inputs, payloads, strict=True):
        if not isinstance(payload.get("model"), dict):
            raise S2SError(f"{path}: checkpoint holds no model weights")
        states.append(payload["model"])
    newest = payloads[-1]
    averaged = {"model": average_state_dicts(states)}
    averaged |= {key: newest[key] for key in ("config", "progress") if key in newest}
    averaged["averaged_from"] = [path.name for path in inputs]
    save_checkpoint(out, averaged)
    log.debug("wrote %s from %s", out, ", ".join(path.name for path in inputs))
    return out


@dataclass
class AverageReport:
    next_command: str  # the s2s command that uses the averaged checkpoint (the task's)
    inputs: list[Path]
    output: Path
    before: dict[str, float] | None  # validation scores of the newest input
    after: dict[str, float] | None  # validation scores of the average


class ScoringTask(Protocol):
    """What averaging asks of a run's task (s2s.tasks.task.Task has both): tasks sit above
    run/, so the caller passes the lookup in."""

    decode_command: str

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        """Validation scores of one checkpoint, computed as training computes them."""
        ...


def average_last(
    run_path: Path,
    last: int,
    out: Path | None,
    validate: bool,
    device: str,
    *,
    find_task: Callable[[str], ScoringTask],
) -> AverageReport:
    """Average the run's ``last`` most recent step checkpoints; with ``validate``, score the
    newest of them and the average on the validation split (by the run's task, which
    ``find_task`` finds by its type)."""
    run = RunDir(run_path).require()
    lock_run_directory(run.path, "s2s average")  # writes the average, maybe the data cache
    task = find_task(read_saved_config(run.config_file).task.type)
    inputs = select_last(run.checkpoints, last)
    output = out or run.checkpoints / f"averaged-last-{last}.pt"
    average_checkpoints(inputs, output)
    if not validate:
        return AverageReport(task.decode_command, inputs, output, None, None)
    before = task.score_checkpoint(run, inputs[-1], device)
    after = task.score_checkpoint(run, output, device)
    return AverageReport(task.decode_command, inputs, output, before, after)


def best_average(
    run: RunDir,
    task: ScoringTask,
    device: str,
    most: int,
    metric: str,
    best: float | None,
) -> tuple[Path, float] | None:
    """Average the last 2, 3, ... ``most`` step checkpoints of ``run`` and score each on
    validation by ``metric`` (its log key without ``valid_``); the best average and its
    score if it beats ``best`` (the best single checkpoint's), else None. Averages that
    lose are deleted."""
    from s2s.scores import lower_is_better

    lower = lower_is_better(metric)
    found = [path for _, path in step_checkpoints(run.checkpoints)]
    winner: tuple[Path, float] | None = None
    for count in range(2, min(most, len(found)) + 1):
        out = run.checkpoints / f"averaged-last-{count}.pt"
        average_checkpoints(found[-count:], out)
        value = task.score_checkpoint(run, out, device)[f"valid_{metric}"]
        target = winner[1] if winner is not None else best
        better = target is None or (value < target if lower else value > target)
        if better:
            if winner is not None:
                winner[0].unlink(missing_ok=True)
            winner = (out, value)
        else:
            out.unlink(missing_ok=True)
    return winner
