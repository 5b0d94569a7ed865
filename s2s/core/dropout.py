"""Dropout with a mask drawn by `torch.rand` on the CPU.

`nn.Dropout` draws its mask with `bernoulli_`, which on this project's 2-core CPU took
13.6 ms for 3 500 x 512 values, three times `torch.rand` (4.2 ms): forward and backward
of one dropout cost 16.2 ms against 7.1 ms here. That was 7 % of a `recipes/mt.toml`
training step in fp32; trainings run 3-4 % faster with this (docs/performance-log.md). On a
GPU `F.dropout` is one fused kernel and is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Dropout(nn.Module):
    """`nn.Dropout` (zero each value with probability p, scale the rest by 1 / (1 - p),
    identity in eval mode), with the same interface and no state of its own."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        # fp32 uniforms whatever x's dtype: P(u >= p) is 1 - p to 2^-24, not to bf16's 2^-8
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"
