"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv:2410.01201).

    z_t = sigmoid(W_z x_t + b_z)             update gate, from the input only
    h~_t = g(W_h x_t + b_h)                  candidate, g(v) = v + 1/2 if v >= 0 else sigmoid(v)
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

Nothing inside the recurrence depends on h, so h_t is a linear recurrence in h and a whole
sequence is a scan: h_t = A_t (h_0 + sum_{s<=t} z_s h~_s / A_s) with A_t = prod_{r<=t} (1 - z_r).
It is computed in log space (g keeps every term positive), with `logcumsumexp`, in chunks
of ``scan_chunk`` steps: a long cumulative sum of log(1 - z) loses fp32 precision, a chunk
bounds that error (under 1e-4 over 500 steps in the tests).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from s2s.cells import RecurrentCell, State, at_lengths
from torch import Tensor, nn


def g(v: Tensor) -> Tensor:
    """The paper's activation: positive, continuous, linear for v >= 0."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """log(g(v)) without forming g: log(v + 1/2) for v >= 0, -softplus(-v) below."""
    return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))


def scan_log_space(log_decay: Tensor, log_input: Tensor, h0: Tensor) -> Tensor:
    """h_t = exp(log_decay_t) * h_{t-1} + exp(log_input_t) for t = 1..T, all at once.

    log_decay, log_input [B, T, H]; h0 [B, H], non-negative -> h [B, T, H].
    """
    tiny = torch.finfo(h0.dtype).tiny  # log(0) would be -inf, and -inf - -inf is NaN
    decay = F.pad(log_decay.cumsum(dim=1), (0, 0, 1, 0))  # B x (T+1) x H, 0 at t=0
    values = torch.cat([h0.clamp_min(tiny).log().unsqueeze(1), log_input], dim=1)
    return (decay + (values - decay).logcumsumexp(dim=1)).exp()[:, 1:]


class MinGRUCell(RecurrentCell):
    """minGRU. State: (h,), with h > 0 (a seed passes through g).

    ``update_bias`` initialises b_z: below 0 the cell starts with long memory (z small),
    the way a positive forget-gate bias helps an LSTM early in training. It holds under
    either ``model.init``: the core's uniform init draws the other parameters only.
    """

    options: ClassVar[dict[str, Any]] = {"update_bias": 0.0, "scan_chunk": 32}

    def __init__(
        self, input_size: int, hidden_size: int, update_bias: float = 0.0, scan_chunk: int = 32
    ) -> None:
        if scan_chunk < 1:
            raise ValueError(f"scan_chunk must be at least 1, not {scan_chunk}")
        super().__init__(input_size, hidden_size)
        self.scan_chunk = scan_chunk
        # One matmul gives both the update gate and the candidate: [z | h~].
        self.linear = nn.Linear(input_size, 2 * hidden_size)
        self.update_bias = update_bias
        with torch.no_grad():
            self.linear.bias[:hidden_size].fill_(update_bias)

    @torch.no_grad()
    def init_uniform(self, init_range: float) -> None:
        """Every weight and the candidate's bias uniform; b_z keeps ``update_bias``."""
        super().init_uniform(init_range)
        self.linear.bias[: self.hidden_size].fill_(self.update_bias)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        hidden: Tensor | None = None,
    ) -> State:
        if hidden is None:
            return (torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype),)
        return (g(hidden),)

    def _gates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # fp32 even under autocast: the log-space scan needs the precision.
        gate, candidate = self.linear(x).float().chunk(2, dim=-1)
        return gate, candidate

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        gate, candidate = self._gates(x_t)
        h = state[0].float()
        h = h + torch.sigmoid(gate) * (g(candidate) - h)
        return h, (h,)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        if state is None:
            state = self.initial_state(x.size(0), device=x.device, dtype=torch.float32)
        gate, candidate = self._gates(x)
        log_decay = -F.softplus(gate)  # log(1 - z)
        log_input = -F.softplus(-gate) + log_g(candidate)  # log(z * g(h~))
        h = state[0].float()
        chunks = []
        for start in range(0, x.size(1), self.scan_chunk):
            part = slice(start, start + self.scan_chunk)
            chunk = scan_log_space(log_decay[:, part], log_input[:, part], h)
            chunks.append(chunk)
            h = chunk[:, -1]
        y = torch.cat(chunks, dim=1)
        if lengths is None:
            return y, (h,)
        with_start = torch.cat([state[0].float().unsqueeze(1), y], dim=1)
        return y, (at_lengths(with_start, lengths),)
