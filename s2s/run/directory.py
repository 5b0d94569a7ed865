"""A run directory holds everything needed to use a model later: the resolved config, the
tokeniser model(s), checkpoints and the metrics log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from s2s.config import Config
from s2s.core.cell_registry import cell_factory
from s2s.core.seq2seq import Seq2Seq
from s2s.data.tokenizer import PAD_ID, TokenizerPair
from s2s.errors import S2SError
from s2s.kernels.precision import cast_for_decoding
from s2s.run.checkpoint import STEP_FILE, CheckpointNotFound, atomic_write_bytes, load_checkpoint

LoadedModel = TypeVar("LoadedModel", bound=nn.Module)
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
    {'file': 'step-N.pt', 'step': int, 'metric': number} (a file name, never a path)."""
    if not isinstance(entries, list):
        return f"expected a list of checkpoints, found {type(entries).__name__}"
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            return f"entry {number} is not an object: {entry!r}"
        name = entry.get("file")
        if not isinstance(name, str) or not STEP_FILE.fullmatch(name):
            return f"entry {number}: 'file' must name a step-N.pt file (got {name!r})"
        if not isinstance(entry.get("step"), int):
            return f"entry {number}: 'step' must be an integer (got {entry.get('step')!r})"
        metric = entry.get("metric")
        if isinstance(metric, bool) or not isinstance(metric, int | float):
            return f"entry {number}: 'metric' must be a number (got {metric!r})"
    return None


def build_model(config: Config, tokenizers: TokenizerPair) -> Seq2Seq:
    model_cfg = config.model
    return Seq2Seq(
        model_cfg,
        cell_factory(model_cfg.cell, model_cfg.cell_options),
        tokenizers.src.vocab_size,
        tokenizers.tgt.vocab_size,
        PAD_ID,
        share_vocab=tokenizers.joint,
    )


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise S2SError("train.device = 'cuda' but no CUDA device is available (use 'cpu')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_weights(model: nn.Module, weights: object, checkpoint: Path) -> None:
    """Load a state dict after checking every tensor's name, type and shape against the
    model the config builds, so a mismatch is one line naming the tensor."""
    if not isinstance(weights, dict):
        raise S2SError(f"{checkpoint}: checkpoint holds no model weights")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise S2SError(
            f"{checkpoint}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in expected.items():
        found = weights[name]
        if not isinstance(found, torch.Tensor):
            raise S2SError(f"{checkpoint}: {name} is a {type(found).__name__}, not a tensor")
        if found.shape != tensor.shape:
            raise S2SError(
                f"{checkpoint}: {name} has shape {tuple(found.shape)}, "
                f"the config needs {tuple(tensor.shape)}"
            )
    model.load_state_dict(weights)


def load_model_weights(model: nn.Module, run: RunDir, checkpoint: Path | None = None) -> Path:
    """Load ``checkpoint``'s weights (default: the run's best) into ``model``; returns the
    checkpoint read."""
    path, payload = run.load_checkpoint(checkpoint)
    load_weights(model, payload.get("model"), path)
    return path


def ready_to_decode(
    model: LoadedModel, config: Config, device: torch.device, amp: str | None, cast_weights: bool
) -> LoadedModel:
    """``model`` in eval mode on ``device``, for the loaders of text and speech runs:
    ``amp`` replaces the config's decode.amp, and the weights are stored in that precision
    unless ``cast_weights`` is off (for scoring as training does, in fp32 weights)."""
    config.decode.amp = amp or config.decode.amp
    model = model.to(device).eval()
    if cast_weights:
        model = cast_for_decoding(model, config.decode.amp, device)
    return model
