"""Convolutional-recurrent cell: a causal 1-D convolution over time feeds a gated recurrence.

The convolution sees the current input and the ``kernel_size - 1`` before it, so the cell
reads local n-gram features while the recurrence carries long-range state. Those earlier
inputs are part of the state, which keeps stepwise decoding equal to whole-sequence
processing: a sequence runs one convolution over all steps, then the recurrence.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State
from s2s.kernels.packed_linear import DropsPackedCopies, PackedWeight, can_pack, source_key
from s2s_cells.gru import gru_update


class CRNNCell(DropsPackedCopies, RecurrentCell):
    """Causal convolution (width ``kernel_size``) in place of a GRU's input projection.

    h_t = GRU-update(conv(x_{t-k+1..t}), h_{t-1}) with reset and update gates as in Cho et
    al. (2014). State: (h [B, H], window [B, k-1, I]: the last k-1 inputs, oldest first).
    """

    options: ClassVar[dict[str, Any]] = {"kernel_size": 3}

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3) -> None:
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be at least 1, not {kernel_size}")
        super().__init__(input_size, hidden_size)
        self.kernel_size = kernel_size
        # Gate pre-activations from the input window, in GRU order: reset, update, new.
        self.conv = nn.Conv1d(input_size, 3 * hidden_size, kernel_size)
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        nn.init.uniform_(self.weight_hh, -bound, bound)
        nn.init.uniform_(self.bias_hh, -bound, bound)
        self._packed_window = PackedWeight()
        self._packed_hh = PackedWeight()

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        hidden: Tensor | None = None,
    ) -> State:
        if hidden is not None:
            batch_size, device, dtype = hidden.size(0), hidden.device, hidden.dtype
        else:
            hidden = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        window = torch.zeros(
            batch_size, self.kernel_size - 1, self.input_size, device=device, dtype=dtype
        )
        return (hidden, window)

    def _recur(self, gates_x: Tensor, h: Tensor) -> Tensor:
        """The gated update from input pre-activations [B, 3H] and the previous h [B, H]."""
        if not self.training and can_pack(h, self.weight_hh):
            return self._packed_recur(gates_x, h)
        gates_h = F.linear(h, self.weight_hh, self.bias_hh)
        r_x, z_x, n_x = gates_x.chunk(3, dim=-1)
        r_h, z_h, n_h = gates_h.chunk(3, dim=-1)
        reset = torch.sigmoid(r_x + r_h)
        update = torch.sigmoid(z_x + z_h)
        new = torch.tanh(n_x + reset * n_h)
        return new + update * (h - new)

    def _packed_recur(self, gates_x: Tensor, h: Tensor) -> Tensor:
        """`_recur` in CPU inference: the recurrent product on ``weight_hh`` packed once for
        oneDNN (s2s.kernels.packed_linear), then the GRU's update in fp32 with tanh as a sigmoid
        (`gru_update`)."""
        gates_h = self._packed_hh.linear(h, self.weight_hh, self.bias_hh).float()
        return gru_update(gates_x.float(), gates_h, h.float()).to(h.dtype)

    def _window_weight(self) -> Tensor:
        """The convolution at one position as a linear map of the flattened window:
        [3H, k * I] (the window's inputs oldest first, each I wide)."""
        return self.conv.weight.transpose(1, 2).reshape(self.conv.out_channels, -1)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step. In CPU inference the window's product runs on the flattened convolution
        weight packed once, where training flattens it at every step (a copy of the whole
        weight), and the recurrence runs `_packed_recur`: 320 rows of 256 -> 512 (k = 3)
        took 6.6-7.0 ms instead of 7.7-8.2, 40 rows 0.92 instead of 1.70-1.84, 5 rows
        0.56-0.60 instead of 0.89 (fp32, AMD EPYC Zen 4, 2 threads, `python
        tools/bench_cells.py --cells crnn --threads 2 --step-batch 40`; one 5-row run of
        the old code took 2.03)."""
        h, window = state
        frame = torch.cat([window.to(x_t.dtype), x_t.unsqueeze(1)], dim=1)  # B x k x I
        flat = frame.reshape(frame.size(0), -1)
        if not self.training and can_pack(flat, self.weight_hh):  # conv.weight is 3-D
            key = source_key(self.conv.weight)
            packed = self._packed_window.get_built(key, self._window_weight)
            gates_x = self._packed_window.linear_packed(flat, packed, self.conv.bias)
        else:
            gates_x = F.linear(flat, self._window_weight(), self.conv.bias)
        h = self._recur(gates_x, h)
        return h, (h, frame[:, 1:])

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        batch, steps = x.shape[:2]
        if state is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        h, window = state
        if lengths is not None:
            lengths = lengths.to(x.device, non_blocking=True)
        frames = torch.cat([window.to(x.dtype), x], dim=1)  # B x (k-1+T) x I
        gates_x = self.conv(frames.transpose(1, 2)).transpose(1, 2)  # B x T x 3H
        outputs = []
        for t in range(steps):
            h_t = self._recur(gates_x[:, t], h)
            h = h_t if lengths is None else torch.where((lengths > t).view(-1, 1), h_t, h)
            outputs.append(h_t)
        ends = torch.full((batch,), steps, device=x.device) if lengths is None else lengths
        # The last k-1 inputs before each sequence's end are frames[ends : ends + k-1].
        offsets = torch.arange(self.kernel_size - 1, device=x.device)
        index = ends.view(-1, 1) + offsets  # B x (k-1)
        window = frames.gather(1, index.unsqueeze(-1).expand(-1, -1, frames.size(2)))
        return torch.stack(outputs, dim=1), (h, window)
