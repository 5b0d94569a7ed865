"""A run directory holds everything needed to use a model later: the resolved config, the
tokeniser model(s), checkpoints and the metrics log."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from s2s.cell_registry import cell_factory
from s2s.checkpoint import atomic_write_bytes, load_checkpoint
from s2s.config import Config, read_saved_config, with_decode_overrides
from s2s.errors import S2SError
from s2s.model import Seq2Seq
from s2s.precision import cast_for_decoding
from s2s.tokenizer import PAD_ID, TokenizerPair, load_tokenizers

LoadedModel = TypeVar("LoadedModel", bound=nn.Module)


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
        """Best checkpoints as [{'file', 'step', 'metric'}], best first."""
        if not self.best_index.is_file():
            return []
        return json.loads(self.best_index.read_text())

    def write_best(self, entries: list[dict]) -> None:
        atomic_write_bytes(self.best_index, json.dumps(entries, indent=1).encode())

    def default_checkpoint(self) -> Path:
        best = self.read_best()
        if best:
            return self.checkpoints / best[0]["file"]
        if self.last_checkpoint.is_file():
            return self.last_checkpoint
        raise S2SError(f"{self.path}: no checkpoint yet (has training saved one?)")


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


def load_weights(model: Seq2Seq, weights: object, checkpoint: Path) -> None:
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


def load_model_weights(model: Seq2Seq, checkpoint: Path) -> dict:
    """Load a checkpoint's weights into ``model``; returns the whole payload."""
    payload = load_checkpoint(checkpoint)
    load_weights(model, payload.get("model"), checkpoint)
    return payload


def load_run(
    path: Path,
    checkpoint: Path | None = None,
    device: str = "auto",
    amp: str | None = None,
    *,
    cast_weights: bool = True,
    decode_overrides: Sequence[str] = (),
) -> tuple[Config, TokenizerPair, Seq2Seq, torch.device]:
    """Everything inference needs from a run directory, model in eval mode on ``device``.
    ``decode_overrides`` (``--set decode.key=value``) change the saved [decode] settings,
    and ``amp`` then replaces decode.amp; the weights are stored in that precision unless
    ``cast_weights`` is off (for scoring as training does, in fp32 weights)."""
    run = RunDir(path).require()
    config = read_saved_config(run.config_file)
    config = with_decode_overrides(config, list(decode_overrides))
    if config.task.type == "language_model":
        raise S2SError(
            f"{path}: a language model; use s2s generate, s2s score or s2s evaluate with it"
        )
    if config.task.type == "speech":
        raise S2SError(f"{path}: a speech recogniser; use s2s transcribe or s2s evaluate with it")
    tokenizers = load_tokenizers(run.path, config.tokenizer.joint)
    model = build_model(config, tokenizers)
    load_model_weights(model, checkpoint or run.default_checkpoint())
    torch_device = resolve_device(device)
    model = ready_to_decode(model, config, torch_device, amp, cast_weights)
    return config, tokenizers, model, torch_device


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
