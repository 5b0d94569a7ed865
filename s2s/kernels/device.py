"""Which device runs a model: `auto` picks CUDA when there is one."""

from __future__ import annotations

import torch

from s2s.errors import S2SError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise S2SError("train.device = 'cuda' but no CUDA device is available (use 'cpu')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
