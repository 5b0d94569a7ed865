"""Model weights out of a checkpoint, checked tensor by tensor against the model the config
builds, so a mismatch is one line naming the tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from s2s.errors import S2SError
from s2s.run.directory import RunDir


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
