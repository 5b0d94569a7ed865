"""Output heads: per forecast step, the parameters of a Student-t or Gaussian distribution
(trained by negative log-likelihood), or one point (trained by squared error: the
introductory next-value model). All in the scaled space of `s2s.tasks.forecasting.scaling`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Normal, StudentT

PARAMETERS = {"student_t": 3, "gaussian": 2, "mse": 1}
MIN_SPREAD = 1e-3


class OutputHead(nn.Module):
    """Hidden [B, H, D] -> raw parameters [B, H, k] for the loss named ``kind``."""

    def __init__(self, width: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.project = nn.Linear(width, PARAMETERS[kind])

    def forward(self, hidden: Tensor) -> Tensor:
        return self.project(hidden).float()


def distribution(raw: Tensor, kind: str) -> Distribution | None:
    """The predictive distribution of raw head outputs (scaled space); None for points."""
    if kind == "mse":
        return None
    loc, spread = raw[..., 0], F.softplus(raw[..., 1]) + MIN_SPREAD
    if kind == "gaussian":
        return Normal(loc, spread)
    return StudentT(2.0 + F.softplus(raw[..., 2]), loc, spread)  # df > 2: a finite variance


def head_loss(raw: Tensor, target: Tensor, kind: str) -> Tensor:
    """Summed loss over the known targets (scaled space): NLL, or squared error."""
    known = torch.isfinite(target)
    target = torch.where(known, target, torch.zeros_like(target))
    if kind == "mse":
        loss = (raw[..., 0] - target) ** 2
    else:
        loss = -distribution(raw, kind).log_prob(target)  # type: ignore[union-attr]
    return torch.where(known, loss, torch.zeros_like(loss)).sum()


def point(raw: Tensor) -> Tensor:
    """The median (scaled space): the location of every head here (all are symmetric)."""
    return raw[..., 0]


def sample(raw: Tensor, kind: str, count: int, seed: int = 0) -> Tensor:
    """``count`` samples per step, [count, B, H] (scaled space), drawn under ``seed`` without
    disturbing the global random state, so a forecast is reproducible; a point head gives
    its point ``count`` times."""
    loc = point(raw)
    if kind == "mse":
        return loc.expand(count, *loc.shape)
    devices = [loc.device] if loc.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=loc.device.type):
        torch.manual_seed(seed)
        return distribution(raw, kind).sample((count,))  # type: ignore[union-attr]
