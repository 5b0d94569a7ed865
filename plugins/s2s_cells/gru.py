"""GRU on the fused `nn.GRU` kernel (cuDNN on GPU; a native loop on CPU)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State, run_fused


class GRUCell(RecurrentCell):
    """Gated recurrent unit (Cho et al. 2014). State: (h,)."""

    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.rnn = nn.GRU(input_size, hidden_size, batch_first=True)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        rnn = self.rnn
        h = torch.gru_cell(
            x_t, state[0], rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
        )
        return h, (h,)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        hx = None if state is None else state[0].unsqueeze(0)
        y, h = run_fused(self.rnn, x, hx, lengths)
        return y, (h.squeeze(0),)
