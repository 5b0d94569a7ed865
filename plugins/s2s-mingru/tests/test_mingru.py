"""minGRU keeps the s2s cell contract, and its parallel scan computes the paper's recurrence."""

from __future__ import annotations

import math

import pytest
import torch
from s2s.testing import CHECKS, check_cell

from s2s_mingru import MinGRUCell


@pytest.mark.parametrize("check", CHECKS)
def test_keeps_the_cell_contract(check: str) -> None:
    check_cell(MinGRUCell, checks=[check])


def test_keeps_the_contract_when_a_sequence_spans_several_scan_chunks() -> None:
    check_cell(MinGRUCell, scan_chunk=3, update_bias=-2.0)


def constant_cell(update: float, candidate: float, steps_per_chunk: int = 32) -> MinGRUCell:
    """One unit whose gate and candidate ignore the input: z and h~ are constants."""
    cell = MinGRUCell(2, 1, scan_chunk=steps_per_chunk)
    with torch.no_grad():
        cell.linear.weight.zero_()
        cell.linear.bias.copy_(torch.tensor([math.log(update / (1 - update)), candidate]))
    return cell


def test_scan_matches_the_closed_form_over_many_chunks() -> None:
    # z = 1/4 and h~ = g(1) = 3/2 from h_0 = 0: h_t = 3/2 (1 - (3/4)^t).
    cell = constant_cell(0.25, 1.0, steps_per_chunk=7)
    steps = 60
    y, (h,) = cell(torch.randn(2, steps, 2))
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    expected = 1.5 * (1 - 0.75**t)
    torch.testing.assert_close(y[0, :, 0].double(), expected, atol=1e-5, rtol=1e-5)
    assert h[0, 0].item() == pytest.approx(expected[-1].item(), abs=1e-5)


def test_negative_candidates_go_through_the_sigmoid_branch_of_g() -> None:
    # h~ = g(-2) = sigmoid(-2); with z = 1/2 from h_0 = 0, h_2 = sigmoid(-2) * 3/4.
    cell = constant_cell(0.5, -2.0)
    y, _ = cell(torch.randn(1, 2, 2))
    assert y[0, 1, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item() * 0.75)


def test_long_sequences_stay_equal_to_the_stepwise_recurrence() -> None:
    torch.manual_seed(0)
    cell = MinGRUCell(8, 16, update_bias=2.0)  # fast forgetting stresses the log-space sums
    with torch.no_grad():
        cell.linear.weight.mul_(4.0)
    x = torch.randn(3, 500, 8)
    with torch.no_grad():
        y, _ = cell(x)
        state = cell.initial_state(3)
        for t in range(x.size(1)):
            h, state = cell.step(x[:, t], state)
            assert (h - y[:, t]).abs().max().item() < 1e-4, t


def test_a_seed_passes_through_g_so_the_state_stays_positive() -> None:
    cell = MinGRUCell(2, 2)
    (h,) = cell.initial_state(1, hidden=torch.tensor([[-1.0, 2.0]]))
    torch.testing.assert_close(h, torch.tensor([[torch.sigmoid(torch.tensor(-1.0)).item(), 2.5]]))


def test_options_are_applied_and_checked() -> None:
    cell = MinGRUCell(3, 4, update_bias=-2.0)
    assert torch.all(cell.linear.bias[:4] == -2.0)
    with pytest.raises(ValueError, match="scan_chunk must be at least 1"):
        MinGRUCell(3, 4, scan_chunk=0)


def test_update_bias_survives_the_uniform_init() -> None:
    cell = MinGRUCell(3, 40, update_bias=-1.5)
    cell.init_uniform(0.1)  # what s2s's default model.init = "uniform" calls
    assert torch.all(cell.linear.bias[:40] == -1.5)
    assert cell.linear.bias[40:].abs().max() <= 0.1 and cell.linear.weight.abs().max() <= 0.1
