"""LSTM on the fused `nn.LSTM` kernel (oneDNN on CPU, cuDNN on GPU)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.cells import RecurrentCell, State, StepFunction, run_fused
from s2s.kernels.packed_linear import DropsPackedCopies, PackedWeight, can_pack, source_key
from s2s.kernels.time_batched_linear import TimeBatchedLinear, time_batching_applies

# Below this many rows a single `lstm_cell` call beats the fixed overhead of a oneDNN call
# when decoding without packed weights (GPU, autocast's fp32 weights). In training (input
# feeding runs the decoder step by step) `lstm_cell` wins at any size: oneDNN's backward
# of a length-1 sequence costs about twice its forward and backward (64 rows, 512 -> 512,
# one thread: 8-9 ms against 19-21 ms).
_FUSED_STEP_MIN_ROWS = 32


class LSTMCell(DropsPackedCopies, RecurrentCell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997). State: (h, c).

    ``proj_size`` > 0 projects h to that width (Sak et al. 2014): a cheaper recurrence and a
    narrower output, so ``output_size`` is ``proj_size`` and c keeps ``hidden_size``.

    ``forget_bias``, when set, is the forget gate's starting bias under either
    ``model.init``. Unset, it is 1.0 under "pytorch" and drawn like every other bias
    under "uniform": the recipes' scores were measured that way.
    """

    options: ClassVar[dict[str, Any]] = {"forget_bias": None, "proj_size": 0}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        forget_bias: float | None = None,
        proj_size: int = 0,
    ) -> None:
        if not 0 <= proj_size < hidden_size:
            raise ValueError(
                f"proj_size must be 0 (off) or below hidden_size {hidden_size}, not {proj_size}"
            )
        if not (forget_bias is None or _is_number(forget_bias)):
            raise ValueError(f"forget_bias must be a number, not {forget_bias!r}")
        super().__init__(input_size, hidden_size)
        self.output_size = proj_size or hidden_size
        self.forget_bias = forget_bias
        self.rnn = nn.LSTM(input_size, hidden_size, batch_first=True, proj_size=proj_size)
        self._set_forget_bias(1.0 if forget_bias is None else forget_bias)
        self._decoding = _DecodingWeights()

    @torch.no_grad()
    def _set_forget_bias(self, value: float) -> None:
        """A positive forget bias lets gradients flow early in training. nn.LSTM adds
        two biases, so the whole value goes into one of them."""
        forget = slice(self.hidden_size, 2 * self.hidden_size)
        self.rnn.bias_ih_l0[forget].fill_(value)
        self.rnn.bias_hh_l0[forget].zero_()

    def init_uniform(self, init_range: float) -> None:
        """Every parameter uniform, as the core draws its own; a set ``forget_bias`` stays."""
        super().init_uniform(init_range)
        if self.forget_bias is not None:
            self._set_forget_bias(self.forget_bias)

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
        cell = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        if hidden is None:
            hidden = torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)
        return (hidden, cell)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        rnn = self.rnn
        if not (self.training or rnn.proj_size) and can_pack(x_t, rnn.weight_ih_l0):
            return self._packed_step(x_t, h, c)
        if x_t.size(0) >= _FUSED_STEP_MIN_ROWS and not torch.is_grad_enabled():
            y, (h, c) = run_fused(
                self.rnn, x_t.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)), None
            )
            return y.squeeze(1), (h.squeeze(0), c.squeeze(0))
        if rnn.proj_size:
            return self._projected_step(x_t, h, c)
        h, c = torch.lstm_cell(
            x_t, (h, c), rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
        )
        return h, (h, c)

    def stepper(self) -> StepFunction:
        """In CPU training, steps whose gate matmul computes its weight gradient once for
        the pass (s2s.kernels.time_batched_linear); with a projection, or elsewhere, `step`."""
        rnn = self.rnn
        if rnn.proj_size or not time_batching_applies(rnn.weight_ih_l0, self.training):
            return self.step
        weight = torch.cat([rnn.weight_ih_l0, rnn.weight_hh_l0], dim=1)
        gates_of = TimeBatchedLinear(weight, rnn.bias_ih_l0 + rnn.bias_hh_l0)

        def step(x_t: Tensor, state: State) -> tuple[Tensor, State]:
            h, c = state
            h, c = _gate_update(gates_of(torch.cat([x_t, h.to(x_t.dtype)], dim=1)), c)
            return h, (h, c)

        return step

    def _packed_step(self, x_t: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
        """CPU inference: one matmul on packed weights, then the gates in fp32 (in bf16,
        PyTorch's tanh alone costs a third of the matmul). The cell state c stays in fp32
        from step to step; h, the next layer's input, is in x_t's precision."""
        gates = self._decoding.gates(self.rnn, torch.cat([x_t, h], dim=1)).float()
        h, c = self.decoding_gate_update(gates, c)
        h = h.to(x_t.dtype)
        return h, (h, c)

    @staticmethod
    def decoding_gate_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """The new (h, c) from pre-activations in the order (i, f, o, 2g), as the packed
        weights give them.

        Both tanh are sigmoids, tanh(x) = 2 sigmoid(2x) - 1 (to 3e-7 absolute), and the
        doubled g lets one sigmoid cover all four gates: PyTorch's fp32 tanh on the CPU
        costs several times its sigmoid. For 320 rows x 512 on an AMD EPYC (Zen 4), 2
        threads, tanh took 213-311 us and sigmoid 36-48, and this update 271-381 us
        against 784-1 049 with two tanh (`python tools/bench_gates.py --threads 2`)."""
        i, f, o, g_sigmoid = torch.sigmoid(gates).chunk(4, dim=1)  # tanh(g) = 2 g_sigmoid - 1
        c = torch.addcmul(f * c - i, i, g_sigmoid, value=2.0)  # f c + i tanh(g)
        h = torch.addcmul(-o, o, torch.sigmoid(2.0 * c), value=2.0)  # o tanh(c)
        return h, c

    def _projected_step(self, x_t: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
        """`lstm_cell` wants h as wide as c, so with a projection the gates are spelt out."""
        rnn = self.rnn
        gates = F.linear(x_t, rnn.weight_ih_l0, rnn.bias_ih_l0)
        gates = gates + F.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0)
        h, c = _gate_update(gates, c)
        h = F.linear(h, rnn.weight_hr_l0)
        return h, (h, c)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        hx = None if state is None else (state[0].unsqueeze(0), state[1].unsqueeze(0))
        y, (h, c) = run_fused(self.rnn, x, hx, lengths)
        return y, (h.squeeze(0), c.squeeze(0))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _gate_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM update from pre-activations [B, 4H] in nn.LSTM's gate order (i, f, g, o):
    the new (h, c), h before any projection."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class _DecodingWeights(PackedWeight):
    """``[W_ih | W_hh]`` with the gates reordered to (i, f, o, 2g), packed for oneDNN
    (s2s.kernels.packed_linear), and the summed bias in the same order: one matmul per step instead
    of oneDNN's LSTM primitive, which repacks both weights at every call (a quarter of its
    time on this project's CPU). Only the packed copy is kept, not the plain one it is
    packed from."""

    def __init__(self) -> None:
        super().__init__()
        self._bias: Tensor | None = None

    def clear(self) -> None:
        super().clear()
        self._bias = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_bias": None}

    def gates(self, rnn: nn.LSTM, x_and_h: Tensor) -> Tensor:
        """Pre-activations [B, 4H] in the order (i, f, o, 2g) for x_and_h = [x_t, h]."""
        params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        key = source_key(*params)
        if self._bias is None or key != self._key:  # before get_built, which sets the key
            self._bias = _in_ifog_order(params[2] + params[3])
        packed = self.get_built(key, lambda: _in_ifog_order(torch.cat(params[:2], dim=1)))
        return self.linear_packed(x_and_h, packed, self._bias)


def _in_ifog_order(gate_rows: Tensor) -> Tensor:
    """nn.LSTM's gate rows (i, f, g, o) reordered to (i, f, o, 2g), detached: doubling is
    exact in every float format, and sigmoid(2g) gives tanh(g) (`LSTMCell._packed_step`)."""
    i, f, g, o = gate_rows.detach().chunk(4)
    return torch.cat([i, f, o, 2.0 * g])
