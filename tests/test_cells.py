"""Built-in cells keep the contract (through the kit) and do what their options say; models
use a cell's output width; the registry finds cells through entry points and reports
unknown, broken and doubly registered cells in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import add_distribution, search_step_log_probs, tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ModelConfig
from s2s.core.cell_registry import cell_factory, discover_cells, load_cell_class
from s2s.core.recurrent_stack import RecurrentStack
from s2s.core.search import BeamSearch, max_output_lengths
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate
from s2s.errors import ConfigError, S2SError
from s2s.tasks.recipe import load_config
from s2s.testing import check_cell

BUILT_IN = ["rnn", "lstm", "gru", "crnn"]
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {}),
    ("lstm", {"forget_bias": 0.0, "proj_size": 3}),
    ("gru", {}),
    ("crnn", {}),
    ("crnn", {"kernel_size": 1}),
    ("crnn", {"kernel_size": 5}),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_builtins_are_registered_through_entry_points() -> None:
    cells, conflicts = discover_cells()
    assert not conflicts
    for name in BUILT_IN:
        assert cells[name].distribution == "s2s"
        assert cells[name].target.startswith("s2s_cells.")
        assert load_cell_class(name).has_fused_forward


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_builtin_cells_pass_the_conformance_kit(name: str, options: dict[str, Any]) -> None:
    check_cell(load_cell_class(name), **options)


@pytest.mark.parametrize("name", ["lstm", "rnn", "gru"])
def test_fused_cells_also_conform_on_batches_that_take_the_fused_step(name: str) -> None:
    check_cell(load_cell_class(name), batch_size=40, checks=["step_vs_sequence", "reorder"])
    check_cell(load_cell_class("lstm"), batch_size=40, proj_size=2, checks=["step_vs_sequence"])


def test_relu_rnn_outputs_are_non_negative() -> None:
    cell = cell_factory("rnn", {"nonlinearity": "relu"})(4, 5)
    y, _ = cell(torch.randn(3, 6, 4))
    assert (y >= 0).all() and (y > 0).any()


def test_a_cell_rejecting_its_options_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cell 'rnn' .* rejected its options: nonlinearity"):
        cell_factory("rnn", {"nonlinearity": "sigmoid"})(4, 5)
    with pytest.raises(ConfigError, match=r"proj_size must be 0 \(off\) or below hidden_size 5"):
        cell_factory("lstm", {"proj_size": 5})(4, 5)


def test_option_types_are_checked_against_the_declared_defaults() -> None:
    with pytest.raises(ConfigError, match=r"cell_options.kernel_size: cell 'crnn' expects int"):
        cell_factory("crnn", {"kernel_size": "3"})
    with pytest.raises(ConfigError, match=r"cell_options.kernel_size: .* got True"):
        cell_factory("crnn", {"kernel_size": True})
    cell_factory("lstm", {"forget_bias": 2})  # an int is a fine float
    with pytest.raises(ConfigError, match=r"rejected its options: forget_bias must be a number"):
        cell_factory("lstm", {"forget_bias": "high"})(4, 6)  # its default, unset, has no type


def test_lstm_forget_bias_and_projection_are_applied() -> None:
    cell = cell_factory("lstm", {"forget_bias": 2.0, "proj_size": 3})(4, 6)
    assert torch.all(cell.rnn.bias_ih_l0[6:12] == 2.0) and torch.all(cell.rnn.bias_hh_l0 != 2.0)
    assert cell.output_size == 3
    h, c = cell.initial_state(2, hidden=torch.ones(2, 3))
    assert h.shape == (2, 3) and c.shape == (2, 6) and not c.any()


def crnn_with_a_memoryless_update(kernel_size: int):
    """A CRNN whose update gate is shut (z = 0) and recurrent weights zero: h_t depends on
    the convolution window alone, so the window's width can be observed."""
    cell = cell_factory("crnn", {"kernel_size": kernel_size})(2, 3)
    with torch.no_grad():
        cell.weight_hh.zero_()
        cell.bias_hh.zero_()
        cell.conv.bias[3:6] = -50.0  # update-gate pre-activation: sigmoid(-50) = 0
    return cell


def test_crnn_output_depends_on_exactly_the_last_kernel_size_inputs() -> None:
    cell = crnn_with_a_memoryless_update(kernel_size=3)
    x = torch.randn(1, 8, 2)
    y, _ = cell(x)
    for moved, changed in [(5, {5, 6, 7}), (2, {2, 3, 4})]:
        x2 = x.clone()
        x2[0, moved] += 1.0
        y2, _ = cell(x2)
        differs = {t for t in range(8) if not torch.allclose(y[0, t], y2[0, t])}
        assert differs == changed


def test_crnn_state_keeps_the_last_inputs_of_each_sequence() -> None:
    cell = cell_factory("crnn", {"kernel_size": 4})(2, 3)
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    _, (_, window) = cell(x, None, torch.tensor([5, 2]))
    assert torch.equal(window[0], x[0, 2:5])
    # the second sequence has 2 inputs: the window still holds one zero from the start
    assert torch.equal(window[1], torch.cat([torch.zeros(1, 2), x[1, :2]]))


def test_stack_widths_follow_the_cells_output_size() -> None:
    make = cell_factory("lstm", {"proj_size": 4})
    stack = RecurrentStack(make, 7, 12, 2, bidirectional=True, residual=True)
    assert stack.output_size == 8 and stack.seed_size == 4
    assert stack.layers[1][0].input_size == 8
    y, states = stack(torch.randn(2, 5, 7), torch.tensor([5, 3]), return_states=True)
    assert y.shape == (2, 5, 8) and states[1][0].shape == (2, 4)


MODEL_VARIANTS = [
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {"proj_size": 3}),
    ("gru", {}),
    ("crnn", {"kernel_size": 2}),
]


@pytest.mark.parametrize(("name", "options"), MODEL_VARIANTS, ids=lambda v: str(v))
def test_a_model_of_each_cell_trains_and_decodes(name: str, options: dict[str, Any]) -> None:
    """Teacher forcing (whole sequences) and search (steps) agree for every cell, also one
    that projects; the loss reaches every parameter."""
    config = ModelConfig(
        cell=name, cell_options=options, embed_size=8, hidden_size=12, encoder_layers=2,
        decoder_layers=2, dropout=0.0, residual=True,
    )  # fmt: skip
    model = Seq2Seq(config, cell_factory(name, options), 30, 30, 0, share_vocab=True)
    batch = collate([0, 1], [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15]])
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        log_probs = model(batch.src, batch.src_lengths, batch.tgt_in).log_softmax(-1)
        stepwise = search_step_log_probs(model, batch)
    torch.testing.assert_close(stepwise, log_probs, atol=1e-5, rtol=1e-5)
    limits = max_output_lengths(batch.src_lengths, 2.0, 3)
    found = BeamSearch(3, nbest=2).search(model, batch.src, batch.src_lengths, limits)
    assert [len(hyps) for hyps in found] == [2, 2]


def test_dot_attention_with_unequal_widths_is_a_config_error() -> None:
    config = ModelConfig(attention="dot", hidden_size=12, cell_options={"proj_size": 4})
    with pytest.raises(ConfigError, match=r"'dot' needs the decoder output width \(4\)"):
        Seq2Seq(config, cell_factory("lstm", {"proj_size": 4}), 30, 30, 0, share_vocab=True)


def test_unknown_cell_lists_installed_names() -> None:
    with pytest.raises(
        ConfigError, match=r"^model.cell: unknown cell 'lsmt' \(installed: crnn, gru, lstm, rnn"
    ):
        load_cell_class("lsmt")


def test_unknown_cell_option_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"cell_options.forget: unknown option for cell 'lstm'"):
        cell_factory("lstm", {"forget": 1.0})


# Plugins from other distributions, made real: a dist-info folder and modules on sys.path.


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Installs: a plugin whose import fails, one that is no cell, one that claims 'gru'."""
    add_distribution(
        tmp_path,
        "broken-cells",
        {"broken": "s2s_test_broken:Cell"},
        {"s2s_test_broken": "import s2s_test_module_that_does_not_exist\n"},
    )
    add_distribution(
        tmp_path, "odd-cells", {"odd": "s2s_test_odd:Cell"}, {"s2s_test_odd": "Cell = 42\n"}
    )
    add_distribution(
        tmp_path,
        "other-gru",
        {"gru": "s2s_test_gru:GRU"},
        {"s2s_test_gru": "from s2s_cells.gru import GRUCell as GRU\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_broken_plugin_names_its_distribution_and_error(third_party: Path) -> None:
    with pytest.raises(S2SError, match=r"^cell 'broken' from broken-cells 1.0 failed to load: "):
        load_cell_class("broken")
    with pytest.raises(S2SError, match=r"ModuleNotFoundError: No module named 's2s_test_module"):
        load_cell_class("broken")
    with pytest.raises(S2SError, match=r"'odd' from odd-cells 1.0 .* not a s2s.cells.Recurrent"):
        load_cell_class("odd")
    cell = cell_factory("lstm", {})(3, 4)  # the other cells still work
    assert cell(torch.randn(1, 2, 3))[0].shape == (1, 2, 4)


def test_two_distributions_registering_one_name_is_an_error_naming_both(third_party) -> None:
    with pytest.raises(ConfigError) as caught:
        load_cell_class("gru")
    message = str(caught.value)
    assert message.startswith("model.cell: cell 'gru' is registered by both ")
    assert "s2s 0.1.0 (s2s_cells.gru:GRUCell)" in message
    assert "other-gru 1.0 (s2s_test_gru:GRU)" in message


def test_s2s_cells_lists_every_cell_and_reports_the_broken_ones(third_party: Path) -> None:
    result = CliRunner().invoke(app, ["cells"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert rows["name"].split() == ["name", "class", "distribution", "fused", "options"]
    assert rows["lstm"].split()[:5] == ["lstm", "s2s_cells.lstm:LSTMCell", "s2s", "0.1.0", "yes"]
    assert rows["lstm"].endswith("forget_bias=None, proj_size=0")
    assert rows["crnn"].endswith("kernel_size=3")
    assert rows["rnn"].endswith("nonlinearity='tanh'")
    assert "broken-cells 1.0" in rows["broken"]
    assert "error: cell 'broken' from broken-cells 1.0 failed to load" in rows["broken"]
    assert "other-gru 1.0 and s2s 0.1.0" in rows["gru"] and "registered by both" in rows["gru"]
    assert "not a s2s.cells.RecurrentCell" in rows["odd"]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3 and all(w.startswith("s2s: warning: cell '") for w in warnings)


def test_bf16_autocast_runs_the_lstm_in_fp32_where_onednn_has_no_bf16(monkeypatch) -> None:
    """PyTorch's CPU autocast sends nn.LSTM to oneDNN in bf16, which has no bf16 LSTM on a
    CPU without native bf16 (AVX2 only): there the fused LSTM and its many-row decoding
    step run oneDNN's fp32 LSTM outside autocast instead of failing, gradients included."""
    monkeypatch.setattr("s2s.cells.native_bf16", lambda: False)
    cell = load_cell_class("lstm")(8, 16)
    x = torch.randn(3, 5, 8).bfloat16().requires_grad_()  # as a bf16 op before it leaves it
    lengths = torch.tensor([5, 3, 4])
    expected, expected_state = cell(x.float(), None, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = cell(x, None, lengths)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(state, expected_state)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    rows = torch.randn(40, 8)  # enough rows for the fused one-step call of decoding
    with torch.no_grad():
        expected_step, _ = cell.step(rows, cell.initial_state(40))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step, _ = cell.step(rows, cell.initial_state(40))
    torch.testing.assert_close(step.float(), expected_step, atol=0.03, rtol=0.03)


PICKY = """
from s2s_cells.gru import GRUCell


class Picky(GRUCell):
    options = {"width": 1}

    def __init__(self, input_size, hidden_size, width=1):
        if width > 1:
            raise ValueError(f"width {width} is not supported yet")
        super().__init__(input_size, hidden_size)
"""


def test_a_plugin_rejecting_its_options_fails_when_the_recipe_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_distribution(
        tmp_path, "picky-cells", {"picky": "s2s_test_picky:Picky"}, {"s2s_test_picky": PICKY}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tiny_recipe(tmp_path / "recipe", pairs=20)
    assert load_config(recipe, ["model.cell=picky"]).model.cell == "picky"
    with pytest.raises(ConfigError) as caught:
        load_config(recipe, ["model.cell=picky", "model.cell_options={width=2}"])
    message = str(caught.value)
    assert message.startswith(f"{recipe}: model.cell_options: cell 'picky' ")
    assert message.endswith("rejected its options: width 2 is not supported yet")
