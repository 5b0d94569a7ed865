"""Per-window scaling (DeepAR's): every window is scaled by numbers of its own context, so
series of any size share one model and nothing after the origin is read; forecasts are
scaled back with the same numbers."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

MIN_SCALE = 1e-5


class Scale(NamedTuple):
    """y_scaled = (y - shift) / scale, per window: shift [B, 1], scale [B, 1]."""

    shift: Tensor
    scale: Tensor

    def apply(self, values: Tensor) -> Tensor:
        """[B, T] values (or [B, T, K] with a trailing axis) to the scaled space."""
        shift, scale = self._broadcast(values)
        return (values - shift) / scale

    def undo(self, values: Tensor) -> Tensor:
        shift, scale = self._broadcast(values)
        return values * scale + shift

    def _broadcast(self, values: Tensor) -> tuple[Tensor, Tensor]:
        extra = values.dim() - self.shift.dim()
        shape = self.shift.shape + (1,) * extra
        return self.shift.reshape(shape), self.scale.reshape(shape)


def fit_scale(context: Tensor, kind: str) -> Scale:
    """The scale of windows from their context [B, C]: ``mean`` divides by the mean
    absolute value, ``standard`` subtracts the mean and divides by the standard deviation,
    ``none`` leaves values as they are."""
    zeros = torch.zeros_like(context[:, :1])
    if kind == "none":
        return Scale(zeros, torch.ones_like(zeros))
    if kind == "mean":
        return Scale(zeros, context.abs().mean(dim=1, keepdim=True).clamp(min=MIN_SCALE))
    mean = context.mean(dim=1, keepdim=True)
    spread = context.std(dim=1, keepdim=True, unbiased=False).nan_to_num(0.0)
    return Scale(mean, spread.clamp(min=MIN_SCALE))
