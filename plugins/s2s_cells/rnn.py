"""Elman RNN on the fused `nn.RNN` kernel: the cheapest recurrent cell, a baseline."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s.cells import RecurrentCell, State, needs_packing

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
        if not needs_packing(x, lengths):
            y, h = self.rnn(x, hx)
            return y, (h.squeeze(0),)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, h = self.rnn(packed, hx)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.size(1))
        return y, (h.squeeze(0),)
