"""The cell contract: what a recurrent cell plugin must offer the core.

A cell is one layer in one direction. Stacking, direction, dropout, residuals, padding
masks and beam reordering are the core's job (see `s2s.recurrent_stack`), done the same
way for every cell. A cell's state is a tuple of tensors with the batch on dimension 0,
so the core can reorder and mask it without knowing what is inside.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """Base class of every cell plugin.

    Subclasses implement `step`; cells backed by a fused kernel also override `forward`
    (and set ``has_fused_forward``) and must stay numerically equal to the stepwise path.
    ``options`` declares the keyword options the cell takes, with their defaults: the
    recipe's ``[model.cell_options]`` is checked against it, so a typo is an error.
    """

    options: ClassVar[dict[str, Any]] = {}
    has_fused_forward: ClassVar[bool] = False

    def __init__(self, input_size: int, hidden_size: int, **options: Any) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        hidden: Tensor | None = None,
    ) -> State:
        """The state before the first step; ``hidden`` [B, H], if given, seeds it
        (the core passes a summary of the encoder to start the decoder)."""
        if hidden is None:
            hidden = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return (hidden,)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step: x_t [B, I] -> (h_t [B, H], new state)."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """A whole sequence: x [B, T, I] -> (y [B, T, H], final state).

        With ``lengths``, the state stops changing past each sequence's end, so the final
        state of a padded sequence equals that of the same sequence unpadded. Outputs at
        padded positions are unspecified.
        """
        batch_size = x.size(0)
        if state is None:
            state = self.initial_state(batch_size, device=x.device, dtype=x.dtype)
        outputs = []
        for t, x_t in enumerate(x.unbind(1)):
            h_t, new_state = self.step(x_t, state)
            if lengths is not None:
                running = (lengths.to(x.device) > t).view(batch_size, 1)
                new_state = tuple(
                    torch.where(running.view(-1, *[1] * (new.dim() - 1)), new, old)
                    for new, old in zip(new_state, state, strict=True)
                )
            state = new_state
            outputs.append(h_t)
        return torch.stack(outputs, dim=1), state


def needs_packing(x: Tensor, lengths: Tensor | None) -> bool:
    """Whether a fused kernel must pack its input to get exact final states."""
    return lengths is not None and bool((lengths < x.size(1)).any())
