"""s2s's dropout: nn.Dropout's behaviour with a mask drawn by torch.rand on the CPU."""

from __future__ import annotations

import pytest
import torch

from s2s.core.dropout import Dropout


def test_drops_about_p_and_scales_the_rest_in_forward_and_backward() -> None:
    torch.manual_seed(0)
    dropout = Dropout(0.3).train()
    x = torch.full((400, 500), 2.0, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)  # 200 000 draws
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through kept values only
    assert torch.allclose(x.grad[kept], torch.tensor(1.0 / 0.7))


def test_bf16_input_keeps_its_dtype_and_the_fp32_drop_rate() -> None:
    torch.manual_seed(1)
    y = Dropout(0.2).train()(torch.ones(300, 300, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert (y != 0).float().mean().item() == pytest.approx(0.8, abs=0.006)


def test_identity_in_eval_mode_or_at_zero_and_seeded_masks_repeat() -> None:
    x = torch.randn(8, 16)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    torch.manual_seed(3)
    first = Dropout(0.5).train()(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.5).train()(x), first)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
