"""Elman RNN on the fused `nn.RNN` kernel: the cheapest recurrent cell, a baseline."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State, run_fused

_STEP_FUNCTIONS = {"tanh": torch.rnn_tanh_cell, "relu": torch.rnn_relu_cell}


class RNNCell(RecurrentCell):
    """Elman network (Elman 1990): h_t = f(W x_t + U h_{t-1} + b). State: (h,)."""

    options: ClassVar[dict[str, Any]] = {"nonlinearity": "tanh"}

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in _STEP_FUNCTIONS:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        super().__init__(input_size, hidden_size)
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, batch_first=True)
        self._step_function = _STEP_FUNCTIONS[nonlinearity]

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        rnn = self.rnn
        h = self._step_function(
            x_t, state[0], rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
        )
        return h, (h,)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        hx = None if state is None else state[0].unsqueeze(0)
        y, h = run_fused(self.rnn, x, hx, lengths)
        return y, (h.squeeze(0),)
