"""The layout of a run directory, which holds everything needed to use a model later (the
resolved config, the tokeniser model(s), checkpoints, the metrics log), and reading its
checkpoints consistently while training writes them. Weights: s2s.run.weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from s2s.errors import S2SError
from s2s.run.checkpoint import (
    AVERAGED_FILE,
    STEP_FILE,
    CheckpointNotFound,
    atomic_write_bytes,
    load_checkpoint,
)

# How often a reader follows best.json to a newer best after training pruned the one it named
DEFAULT_CHECKPOINT_TRIES = 5


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_index(self) -> Path:
        return self.checkpoints / "best.json"

    @property
    def metrics_log(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def evaluations_log(self) -> Path:
        return self.path / "evaluations.jsonl"

    def clear_training_state(self) -> None:
        """Forget checkpoints, metrics, TensorBoard events and test scores (keeping the
        tokeniser and data cache)."""
        import shutil

        shutil.rmtree(self.checkpoints, ignore_errors=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
        self.metrics_log.unlink(missing_ok=True)
        self.evaluations_log.unlink(missing_ok=True)

    def require(self) -> RunDir:
        if not self.path.is_dir():
            raise S2SError(f"{self.path}: run directory not found")
        if not self.config_file.is_file():
            raise S2SError(f"{self.path}: not a run directory (no config.toml)")
        return self

    def read_best(self) -> list[dict]:
        """Best checkpoints as [{'file', 'step', 'metric'}], best first; a damaged index is
        a one-line error naming it (training rewrites it when it resumes)."""
        try:
            text = self.best_index.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as error:
            raise self._bad_best(f"cannot read it ({error})") from None
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            where = f"line {error.lineno}, column {error.colno}"
            raise self._bad_best(f"not valid JSON ({error.msg} at {where})") from None
        problem = best_entries_problem(entries)
        if problem:
            raise self._bad_best(problem)
        return entries

    def _bad_best(self, problem: str) -> S2SError:
        return S2SError(
            f"{self.best_index}: {problem}; train the run again to rewrite it, "
            "or name a checkpoint with --checkpoint"
        )

    def write_best(self, entries: list[dict]) -> None:
        atomic_write_bytes(self.best_index, json.dumps(entries, indent=1).encode())

    def default_checkpoint(self) -> Path:
        """The best checkpoint best.json names, else last.pt."""
        best = self.read_best()
        if best:
            return self.checkpoints / best[0]["file"]
        if self.last_checkpoint.is_file():
            return self.last_checkpoint
        raise S2SError(f"{self.path}: no checkpoint yet (training has not saved one)")

    def load_checkpoint(self, checkpoint: Path | None = None) -> tuple[Path, dict]:
        """The path and payload of ``checkpoint``, or of the run's default one. Training
        running meanwhile may prune the best checkpoint between reading best.json and
        opening the file; then best.json names a newer one, which is read instead."""
        if checkpoint is not None:
            return checkpoint, load_checkpoint(checkpoint)
        path = self.default_checkpoint()
        for _ in range(DEFAULT_CHECKPOINT_TRIES):
            try:
                return path, load_checkpoint(path)
            except CheckpointNotFound:
                named = self.default_checkpoint()
                if named == path:  # not a race: the index names a file that is gone
                    raise S2SError(
                        f"{path}: checkpoint not found (named in {self.best_index})"
                    ) from None
                path = named
        raise S2SError(
            f"{self.path}: the best checkpoint kept changing while it was being read; "
            "try again, or name one with --checkpoint"
        )


def best_entries_problem(entries: object) -> str | None:
    """What is wrong with best.json's parsed content, or None: it must be a list of
    {'file': 'step-N.pt', 'step': int, 'metric': number} (a file name, never a path; a
    budgeted run's chosen average is 'averaged-last-N.pt')."""
    if not isinstance(entries, list):
        return f"expected a list of checkpoints, found {type(entries).__name__}"
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            return f"entry {number} is not an object: {entry!r}"
        name = entry.get("file")
        if not isinstance(name, str) or not (
            STEP_FILE.fullmatch(name) or AVERAGED_FILE.fullmatch(name)
        ):
            return (
                f"entry {number}: 'file' must name a step-N.pt or averaged-last-N.pt file "
                f"(got {name!r})"
            )
        if not isinstance(entry.get("step"), int):
            return f"entry {number}: 'step' must be an integer (got {entry.get('step')!r})"
        metric = entry.get("metric")
        if isinstance(metric, bool) or not isinstance(metric, int | float):
            return f"entry {number}: 'metric' must be a number (got {metric!r})"
    return None
