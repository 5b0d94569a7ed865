"""Built-in cells keep the contract: fused equals stepwise, padding does not leak; the
registry resolves names through entry points and rejects unknown cells and options."""

from __future__ import annotations

import pytest
import torch

from s2s.cell_registry import cell_factory, discover_cells, load_cell_class
from s2s.errors import ConfigError

BUILT_IN = ["lstm", "gru"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_builtins_are_registered_through_entry_points() -> None:
    cells, conflicts = discover_cells()
    assert not conflicts
    for name in BUILT_IN:
        assert cells[name].distribution == "s2s"
        assert cells[name].target.startswith("s2s_cells.")


@pytest.mark.parametrize("name", BUILT_IN)
def test_fused_sequence_equals_stepwise(name: str) -> None:
    cell = cell_factory(name, {})(6, 8)
    x = torch.randn(3, 7, 6)
    y_fused, state_fused = cell(x)
    state = cell.initial_state(3)
    steps = []
    for x_t in x.unbind(1):
        h, state = cell.step(x_t, state)
        steps.append(h)
    torch.testing.assert_close(y_fused, torch.stack(steps, 1), atol=1e-5, rtol=1e-5)
    for fused, stepped in zip(state_fused, state, strict=True):
        torch.testing.assert_close(fused, stepped, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BUILT_IN)
def test_padding_does_not_leak_into_final_state(name: str) -> None:
    cell = cell_factory(name, {})(5, 4)
    x = torch.randn(2, 6, 5)
    lengths = torch.tensor([6, 3])
    y, state = cell(x, None, lengths)
    y_alone, alone = cell(x[1:, :3])
    torch.testing.assert_close(y[1:, :3], y_alone, atol=1e-6, rtol=1e-5)
    for padded, unpadded in zip(state, alone, strict=True):
        torch.testing.assert_close(padded[1:], unpadded, atol=1e-6, rtol=1e-5)


def test_unknown_cell_lists_installed_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown cell 'lsmt' \(installed: .*gru.*lstm"):
        load_cell_class("lsmt")


def test_unknown_cell_option_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"cell_options.forget: unknown option for cell 'lstm'"):
        cell_factory("lstm", {"forget": 1.0})


def test_lstm_forget_bias_option_is_applied() -> None:
    cell = cell_factory("lstm", {"forget_bias": 2.0})(3, 4)
    assert torch.all(cell.rnn.bias_ih_l0[4:8] == 2.0)
