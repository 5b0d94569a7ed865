"""GRU on the fused `nn.GRU` kernel (cuDNN on GPU; a native loop on CPU)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State, run_fused
from s2s.kernels.packed_linear import DropsPackedCopies, PackedWeight, can_pack, tanh_in_place

# From this many rows an fp32 decoding step runs on packed weights (`GRUCell._packed_step`).
# Below it `gru_cell`'s one call wins: the packed step pads its rows to 20 and spells the
# gates out. On an AMD EPYC (Zen 4), 2 threads, 768 -> 512, packed against `gru_cell`:
# 1.13-1.16x the time at 8 rows, 0.89-0.94x at 12, 0.86-0.87x at 16, 0.84-0.88x at 320
# (tools/bench_cells.py --step-batch). In bf16 `gru_cell` already multiplies on oneDNN, and
# the packed step was no faster (0.95-1.03x at 20-320 rows) and slower below (1.4x at 12).
_PACKED_STEP_MIN_ROWS = 12


class GRUCell(DropsPackedCopies, RecurrentCell):
    """Gated recurrent unit (Cho et al. 2014). State: (h,)."""

    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.rnn = nn.GRU(input_size, hidden_size, batch_first=True)
        self._packed_ih = PackedWeight()
        self._packed_hh = PackedWeight()

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        rnn = self.rnn
        fits = x_t.dtype == torch.float32 and x_t.size(0) >= _PACKED_STEP_MIN_ROWS
        if fits and not self.training and can_pack(x_t, rnn.weight_ih_l0):
            return self._packed_step(x_t, state[0])
        h = torch.gru_cell(
            x_t, state[0], rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
        )
        return h, (h,)

    def _packed_step(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, State]:
        """CPU inference in fp32: both products on weights packed once for oneDNN (`gru_cell`
        hands MKL the plain weights at every step), then the gates, with tanh computed
        as 2 sigmoid(2x) - 1 (PyTorch's fp32 tanh costs several times its sigmoid on the
        CPU; see `LSTMCell.decoding_gate_update`). A 320-row step of 768 -> 512 in fp32 took
        6.6-7.2 ms against 7.5-8.6 with `gru_cell` on an AMD EPYC (Zen 4), 2 threads,
        and a 40-row step 1.01-1.05 ms against 1.74-1.82."""
        rnn = self.rnn
        from_x = self._packed_ih.linear(x_t, rnn.weight_ih_l0, rnn.bias_ih_l0)
        from_h = self._packed_hh.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0)
        h = gru_update(from_x, from_h, h)
        return h, (h,)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        hx = None if state is None else state[0].unsqueeze(0)
        y, h = run_fused(self.rnn, x, hx, lengths)
        return y, (h.squeeze(0),)


def gru_update(from_x: Tensor, from_h: Tensor, h: Tensor) -> Tensor:
    """The new h from the input's and the previous h's pre-activations [B, 3H], each in
    nn.GRU's order (reset, update, new), with tanh computed as 2 sigmoid(2x) - 1 (for the
    packed steps of CPU inference: PyTorch's fp32 tanh costs several times its sigmoid;
    see `LSTMCell.decoding_gate_update`)."""
    hidden = h.size(1)
    x_rz, x_n = from_x.split([2 * hidden, hidden], dim=1)
    h_rz, h_n = from_h.split([2 * hidden, hidden], dim=1)
    r, z = torch.sigmoid(x_rz + h_rz).chunk(2, dim=1)
    n = tanh_in_place(torch.addcmul(x_n, r, h_n))
    return torch.addcmul(n, z, h - n)  # (1 - z) n + z h
