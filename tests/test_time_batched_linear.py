"""One weight gradient per pass: the same gradients as a linear layer called per step."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from s2s.kernels.time_batched_linear import TimeBatchedLinear, packs_in_training


def recurrence(linear, x, h):
    """h_{t+1} = tanh(linear([x_t, h_t])) over x [B, T, I] (or [B, T, 1, I]); the loss
    reads every step."""
    outputs = []
    for x_t in x.unbind(1):
        h = torch.tanh(linear(torch.cat([x_t, h], dim=-1)))
        outputs.append(h)
    return torch.stack(outputs, dim=1).float().square().mean()


def gradients(run, *tensors):
    for t in tensors:
        t.grad = None
    run().backward()
    return [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("onednn", [True, False])  # packed weights (fp32 CPU), F.linear
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("extra_dim", [False, True])
def test_gradients_equal_a_linear_per_step(bias: bool, extra_dim: bool, onednn: bool) -> None:
    if onednn and not packs_in_training(torch.zeros(1)):
        pytest.skip("this torch build cannot pack fp32 weights for oneDNN")
    with torch.backends.mkldnn.flags(enabled=onednn):
        check_gradients_equal_a_linear_per_step(bias, extra_dim)


def check_gradients_equal_a_linear_per_step(bias: bool, extra_dim: bool) -> None:
    torch.manual_seed(0)
    shape = (3, 6, 1, 4) if extra_dim else (3, 6, 4)
    x = torch.randn(*shape, requires_grad=True)
    h0 = torch.randn(shape[0], *shape[2:-1], 5, requires_grad=True)  # [B, 5] or [B, 1, 5]
    weight = torch.randn(5, 9, requires_grad=True)
    b = torch.randn(5, requires_grad=True) if bias else None
    leaves = [x, h0, weight] + ([b] if bias else [])
    per_step = gradients(lambda: recurrence(lambda v: F.linear(v, weight, b), x, h0), *leaves)
    batched = gradients(lambda: recurrence(TimeBatchedLinear(weight, b), x, h0), *leaves)
    for expected, actual in zip(per_step, batched, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


def test_under_autocast_it_runs_and_differentiates_as_linear_does() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, 8, requires_grad=True)
    h0 = torch.randn(4, 6)
    weight = torch.randn(6, 14, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear = TimeBatchedLinear(weight)
        assert linear(torch.cat([x[:, 0], h0], dim=-1)).dtype == torch.bfloat16
        grads = gradients(lambda: recurrence(TimeBatchedLinear(weight), x, h0), x, weight)
        expected = gradients(lambda: recurrence(lambda v: F.linear(v, weight), x, h0), x, weight)
    assert grads[1].dtype == torch.float32
    for actual, wanted in zip(grads, expected, strict=True):
        torch.testing.assert_close(actual, wanted, atol=2e-3, rtol=2e-2)


def test_a_step_that_does_not_reach_the_loss_is_an_error_not_a_wrong_gradient() -> None:
    weight = torch.randn(3, 3, requires_grad=True)
    linear = TimeBatchedLinear(weight)
    first = linear(torch.randn(2, 3))
    linear(torch.randn(2, 3))  # step 1 is left out of the loss: its gradient never comes
    with pytest.raises(RuntimeError, match=r"before that of steps \[1\]"):
        first.sum().backward()


def test_a_pass_is_freed_without_the_garbage_collector() -> None:
    """Kept inputs must not tie a reference cycle through the graph: training would hold
    every pass's activations until the collector ran (it made training slower and uneven)."""
    weight = torch.randn(4, 6, requires_grad=True)
    gc.disable()
    try:
        linear, h = TimeBatchedLinear(weight), torch.zeros(3, 4)
        step_inputs = []
        for x_t in torch.randn(5, 3, 2).unbind(0):
            step_input = torch.cat([x_t, h], dim=-1)
            step_inputs.append(weakref.ref(step_input))
            h = torch.tanh(linear(step_input))
        h.sum().backward()
        del linear, h, step_input
        assert all(ref() is None for ref in step_inputs)
    finally:
        gc.enable()
