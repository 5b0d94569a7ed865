"""Layers, direction, dropout and residuals around single-layer cells, the same for any cell."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State, StepFunction
from s2s.core.dropout import Dropout

CellFactory = Callable[[int, int], RecurrentCell]


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence within its own length; padding stays at the end.

    A backward cell then reads real tokens first, so its outputs at real positions never
    depend on padding, and no packing (1.7x slower on oneDNN) is needed.
    """
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # 1 x T
    lengths = lengths.to(x.device, non_blocking=True).unsqueeze(1)  # B x 1
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # B x T
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class RecurrentStack(nn.Module):
    """A stack of recurrent layers; a bidirectional layer splits ``hidden_size`` between
    its two directions. Each layer outputs its cells' ``output_size`` per direction (that is
    ``hidden_size`` for cells that do not project), and the next layer reads that width.

    ``output_size`` is the width of the stack's output; ``seed_size`` the width of the
    per-layer ``hidden`` that `initial_states` seeds a unidirectional stack with.
    """

    def __init__(
        self,
        make_cell: CellFactory,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        directions = 2 if bidirectional else 1
        per_direction = hidden_size // directions
        self.bidirectional = bidirectional
        self.residual = residual
        self.hidden_size = hidden_size
        self.layers = nn.ModuleList()
        width = input_size
        for _ in range(num_layers):
            cells = nn.ModuleList(make_cell(width, per_direction) for _ in range(directions))
            self.layers.append(cells)
            width = directions * cells[0].output_size
        self.output_size = width
        self.seed_size = self.layers[0][0].output_size
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        states: list[State] | None = None,
        *,
        return_states: bool = False,
    ) -> tuple[Tensor, list[State] | None]:
        """x [B, T, I] -> (y [B, T, output_size], final state per layer if asked for).

        Cells only get ``lengths`` when final states are wanted: outputs at real positions
        are exact without it, and fused kernels are fastest on unpacked input.
        """
        cell_lengths = lengths if return_states else None
        finals: list[State] = []
        for index, directions in enumerate(self.layers):
            layer_input = x if index == 0 else self.dropout(x)
            state = None if states is None else states[index]
            y, final = directions[0](layer_input, state, cell_lengths)
            if self.bidirectional:
                backward_input = reverse_padded(layer_input, lengths)
                y_back, final_back = directions[1](backward_input, None, cell_lengths)
                y = torch.cat([y, reverse_padded(y_back, lengths)], dim=-1)
                final = final + final_back
            if self.residual and index > 0:
                y = y + x
            x = y
            finals.append(final)
        return x, (finals if return_states else None)

    def initial_states(self, hidden: Tensor) -> list[State]:
        """Per-layer start states of a unidirectional stack, seeded by hidden [L, B, seed_size]."""
        return [
            layer[0].initial_state(hidden.size(1), hidden=h)
            for layer, h in zip(self.layers, hidden, strict=True)
        ]

    def step(self, x_t: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
        """One decoding step through every layer (unidirectional stacks only)."""
        return self._step([layer[0].step for layer in self.layers], x_t, states)

    def stepper(self) -> Callable[[Tensor, list[State]], tuple[Tensor, list[State]]]:
        """`step` for one pass in training, on each cell's `stepper` (see s2s.cells)."""
        return partial(self._step, [layer[0].stepper() for layer in self.layers])

    def _step(
        self, cell_steps: list[StepFunction], x_t: Tensor, states: list[State]
    ) -> tuple[Tensor, list[State]]:
        new_states = []
        for index, (cell_step, state) in enumerate(zip(cell_steps, states, strict=True)):
            layer_input = x_t if index == 0 else self.dropout(x_t)
            h, state = cell_step(layer_input, state)
            if self.residual and index > 0:
                h = h + x_t
            x_t = h
            new_states.append(state)
        return x_t, new_states
