"""A linear layer applied at every step of a recurrence, with one weight gradient for all
steps.

With input feeding the decoder runs step by step in training, and autograd computes the
weight gradient of each step's matmul on its own: a 64-row product per step (K = 64, well
below the CPU's matmul peak) and an accumulation into ``.grad`` after it. Here every step
keeps its input and the gradient of its output, and the first step, whose backward runs
last because every later step depends on it, computes the weight gradient of the whole
pass as one matmul over all steps' rows. On this project's CPU that made fp32 training of
the peer benchmark model 4-5 % faster, and bf16 7-9 % (docs/performance-log.md). In fp32 the
steps' own products also run on the weight packed for oneDNN once per pass
(`packs_in_training`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from s2s.kernels.packed_linear import PackedWeight, packs


def time_batching_applies(weight: Tensor, training: bool) -> bool:
    """Whether a step-by-step pass over ``weight`` should use `TimeBatchedLinear`: in
    training with gradients, on the CPU, where the gain was measured (on CUDA the plain
    path's fused `lstm_cell` is kept and the gain is unmeasured)."""
    return training and torch.is_grad_enabled() and weight.device.type == "cpu"


def packs_in_training(weight: Tensor) -> bool:
    """Whether a pass runs its steps on a copy of ``weight`` packed for oneDNN once per
    pass (s2s.kernels.packed_linear): fp32 on the CPU. For the 64-row steps of the peer benchmark
    model that made fp32 training 12 % faster on an AMD EPYC (Zen 4), where MKL ran the
    LSTM step's 64-row product at 108-160 GFLOP/s and oneDNN on a packed weight at 218
    (docs/performance-log.md). bf16 (autocast) already runs on oneDNN and gained nothing
    clear, so it keeps ``F.linear``."""
    return (
        weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and torch.backends.mkldnn.enabled
        and packs(torch.float32)
    )


class _Pass:
    """What one pass's steps share: each step's input and, in backward, its gradient;
    with ``packed``, the weight and its transpose packed for oneDNN."""

    def __init__(self, packed: bool) -> None:
        self.inputs: list[Tensor] = []
        self.grads: dict[int, Tensor] = {}
        self.packed = PackedWeight(pad_rows=False) if packed else None
        self.packed_transpose = PackedWeight(pad_rows=False) if packed else None

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.packed is None:
            return F.linear(x, weight, bias)
        return self.packed.linear(x, weight, bias)

    def input_gradient(self, grad: Tensor, weight: Tensor) -> Tensor:
        """``grad @ weight``: the gradient of a step's input from that of its output."""
        if self.packed_transpose is None:
            return grad @ weight
        packed = self.packed_transpose.get_built((), lambda: weight.t().contiguous())
        return self.packed_transpose.linear_packed(grad, packed)

    def clear(self) -> None:
        """Drop what the pass kept: one backward per pass, as training does."""
        self.grads.clear()
        self.inputs.clear()
        for packed in (self.packed, self.packed_transpose):
            if packed is not None:
                packed.clear()


class _StepLinear(torch.autograd.Function):
    """``F.linear`` at step ``index`` of a pass; only step 0 returns weight gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, shared: _Pass, index: int):
        ctx.shared, ctx.index = shared, index
        ctx.save_for_backward(weight)
        shared.inputs.append(x.detach())  # no reference cycle through x's graph to ctx
        return shared.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        shared, index = ctx.shared, ctx.index
        grad_input = shared.input_gradient(grad, weight)
        if index != 0:
            shared.grads[index] = grad
            return grad_input, None, None, None, None
        shared.grads[0] = grad
        steps = len(shared.inputs)
        if len(shared.grads) != steps:
            missing = sorted(set(range(steps)) - set(shared.grads))
            raise RuntimeError(
                f"TimeBatchedLinear: step 0's backward ran before that of steps {missing}; "
                "it only fits a recurrence, where every later step depends on step 0"
            )
        width = grad.size(-1)
        grads = torch.cat([shared.grads[t].reshape(-1, width) for t in range(steps)])
        inputs = torch.cat([x.reshape(-1, x.size(-1)) for x in shared.inputs])
        shared.clear()
        grad_weight = grads.t() @ inputs
        grad_bias = grads.sum(0) if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None, None


class TimeBatchedLinear:
    """``F.linear(x, weight, bias)`` for the steps of one pass of a recurrence, in order.

    Build one per pass (per batch) and call it once per step. Under autocast the weight
    is cast once for the pass and the steps run in the autocast dtype, as ``F.linear``
    would. Inputs are kept for backward outside autograd's saved tensors: they must not
    be changed in place, and the pass takes one backward (no ``retain_graph`` reruns).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        device = weight.device.type
        self.dtype = (
            torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        )
        self._weight = weight.to(self.dtype)
        self._bias = None if bias is None else bias.to(self.dtype)
        self._pass = _Pass(packs_in_training(self._weight))

    def __call__(self, x: Tensor) -> Tensor:
        index = len(self._pass.inputs)
        weight, bias = self._weight, self._bias
        if index > 0:  # their gradients reach the weight through step 0
            weight = weight.detach()
            bias = None if bias is None else bias.detach()
        with torch.autocast(x.device.type, enabled=False):
            return _StepLinear.apply(x.to(self.dtype), weight, bias, self._pass, index)
