"""The cell contract: what a recurrent cell plugin must offer the core.

A cell is one layer in one direction. Stacking, direction, dropout, residuals, padding
masks and beam reordering are the core's job (see `s2s.core.recurrent_stack`), done the same
way for every cell. A cell's state is a tuple of tensors with the batch on dimension 0
(a NamedTuple or another tuple type is kept as it is), so the core can reorder and mask it
without knowing what is inside.

The contract in full (docs/cells.md walks through it; `s2s.testing` checks it):

- ``__init__(input_size, hidden_size, **options)``: every option is a keyword parameter
  with a default, and ``options`` declares the same names and defaults, so a recipe's
  ``[model.cell_options]`` can be checked (a typo or a wrong type is an error);
- ``output_size``: the width of ``h_t`` (``hidden_size`` unless the cell projects);
- ``initial_state(batch_size, device=, dtype=, hidden=)``: the start state, a tuple of
  batch-first tensors; ``hidden`` [B, output_size] seeds it when given;
- ``step(x_t, state) -> (h_t, state)``: one time step, used by decoding;
- ``stepper()``: optional, the step function of one pass in training that must go step
  by step (input feeding). The default is ``step``; a cell may return a function that
  shares work between the pass's steps (the built-in LSTM computes its weight gradient
  once for the pass), and must then stay numerically equal to ``step``;
- ``forward(x, state, lengths) -> (y, state)``: a whole sequence. The default loops
  ``step``; a cell may override it (a fused kernel, a parallel scan) and must then stay
  numerically equal to the stepwise path, and keep the final state of every sequence at
  its own length;
- ``init_uniform(init_range)``: optional, what ``model.init = "uniform"`` does to the
  cell's parameters. The default draws every one from U(-init_range, init_range), as the
  core does for its own layers; a cell overrides it to keep its own initialisation of
  some or all of them (the built-in LSTM keeps a ``forget_bias`` that is set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s.cpu import native_bf16

State = tuple[Tensor, ...]
# One time step of a cell: (x_t, state) -> (h_t, new state).
StepFunction = Callable[[Tensor, State], tuple[Tensor, State]]


class RecurrentCell(nn.Module):
    """Base class of every cell plugin.

    Subclasses implement `step`; cells with a faster whole-sequence path also override
    `forward` and must stay numerically equal to the stepwise path. ``options`` declares
    the keyword options the cell takes, with their defaults: the recipe's
    ``[model.cell_options]`` is checked against it, so a typo is an error.
    ``has_fused_forward`` says whether `forward` is overridden; it is worked out from the
    class unless a subclass sets it.
    """

    options: ClassVar[dict[str, Any]] = {}
    has_fused_forward: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "has_fused_forward" not in vars(cls):
            cls.has_fused_forward = cls.forward is not RecurrentCell.forward

    def __init__(self, input_size: int, hidden_size: int, **options: Any) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        # The width of h_t; a cell that projects its output (LSTM proj_size) changes it.
        self.output_size = hidden_size

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        hidden: Tensor | None = None,
    ) -> State:
        """The state before the first step; ``hidden`` [B, output_size], if given, seeds it
        (the core passes a summary of the encoder to start the decoder)."""
        if hidden is None:
            hidden = torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)
        return (hidden,)

    @torch.no_grad()
    def init_uniform(self, init_range: float) -> None:
        """What ``model.init = "uniform"`` does to this cell, once, after the model is built.

        The default redraws every parameter from U(-init_range, init_range), in
        registration order, like the core's own layers. Override it to keep what the
        constructor set: draw what should be uniform (``super().init_uniform(init_range)``
        and then restore, or draw only some parameters), and leave the rest. With
        ``model.init = "pytorch"`` it is not called and the constructor's values stand.
        """
        for parameter in self.parameters():
            parameter.uniform_(-init_range, init_range)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step: x_t [B, I] -> (h_t [B, output_size], new state)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def stepper(self) -> StepFunction:
        """The step function for one pass over a sequence in training, called once per
        step in order; a new pass asks again. A cell may share work between the steps of
        a pass here (and stay equal to `step`); by default every step is `step`."""
        return self.step

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """A whole sequence: x [B, T, I] -> (y [B, T, output_size], final state).

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
                running = lengths.to(x.device, non_blocking=True) > t  # B
                new_state = keep_finished(new_state, state, running)
            state = new_state
            outputs.append(h_t)
        return torch.stack(outputs, dim=1), state


def rebuild_state(like: State, tensors: Iterable[Tensor]) -> State:
    """A state of the same tuple type as ``like`` holding ``tensors``: a cell may keep its
    state in a NamedTuple (rebuilt from fields) or any other tuple subclass."""
    if hasattr(like, "_fields"):
        return type(like)(*tensors)
    if type(like) is tuple:
        return tuple(tensors)
    return type(like)(tensors)


def keep_finished(new: State, old: State, running: Tensor) -> State:
    """``new`` for the rows still ``running`` [B] (bool), ``old`` for those past their end:
    how the core masks every cell's state at padding."""
    return rebuild_state(
        new,
        (
            torch.where(running.view(-1, *[1] * (n.dim() - 1)), n, o)
            for n, o in zip(new, old, strict=True)
        ),
    )


def needs_packing(x: Tensor, lengths: Tensor | None) -> bool:
    """Whether a fused kernel must pack its input to get exact final states."""
    return lengths is not None and bool((lengths < x.size(1)).any())


def run_fused(rnn: nn.RNNBase, x: Tensor, hx: Any, lengths: Tensor | None) -> tuple[Tensor, Any]:
    """Run a single-layer, batch-first `nn.RNN`/`nn.GRU`/`nn.LSTM` over x [B, T, I].

    Packs only when some row is shorter than T, so final states are exact without paying
    for packing on full-length input. Returns the kernel's own (y, final state).
    """
    if _autocast_beyond_onednn(x):
        return _run_fused_outside_autocast(rnn, x, hx, lengths)
    return _run_packed_if_needed(rnn, x, hx, lengths)


def _run_packed_if_needed(
    rnn: nn.RNNBase, x: Tensor, hx: Any, lengths: Tensor | None
) -> tuple[Tensor, Any]:
    if not needs_packing(x, lengths):
        return rnn(x, hx)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    y, final = rnn(packed, hx)
    y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.size(1))
    return y, final


def _autocast_beyond_onednn(x: Tensor) -> bool:
    """Whether CPU autocast would send a fused kernel on ``x`` to oneDNN in bf16 on a CPU
    without native bf16 (AVX2 only, no AVX-512 BF16 or AMX). PyTorch's autocast casts
    `nn.LSTM` to bf16 for oneDNN without asking, and oneDNN has no bf16 LSTM there: it
    raises "could not create a primitive descriptor for the LSTM forward propagation
    primitive"."""
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not native_bf16()
    )


def _run_fused_outside_autocast(
    rnn: nn.RNNBase, x: Tensor, hx: Any, lengths: Tensor | None
) -> tuple[Tensor, Any]:
    """`run_fused` outside autocast, in the weights' precision (fp32, on oneDNN's fp32
    LSTM): what a CPU without native bf16 can run under bf16 autocast, and faster than
    bf16 would run there if oneDNN had it (emulated bf16 ran 16x slower than fp32)."""
    dtype = rnn.all_weights[0][0].dtype
    x = x.to(dtype)
    if hx is not None:
        hx = tuple(h.to(dtype) for h in hx) if isinstance(hx, tuple) else hx.to(dtype)
    with torch.autocast("cpu", enabled=False):
        return _run_packed_if_needed(rnn, x, hx, lengths)


def at_lengths(sequence: Tensor, lengths: Tensor) -> Tensor:
    """Row b of ``sequence`` [B, T, ...] at time ``lengths[b]`` -> [B, ...].

    For cells that compute every step at once: with the start state prepended at time 0,
    ``at_lengths(states, lengths)`` is each sequence's final state.
    """
    index = lengths.to(sequence.device, non_blocking=True).long()
    index = index.view(-1, *[1] * (sequence.dim() - 1))
    index = index.expand(-1, 1, *sequence.shape[2:])
    return sequence.gather(1, index).squeeze(1)
