"""model.init: how a new model's parameters start, and that only new models get it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import VOCAB, Elman, make_model, make_trainer, tiny_recipe

from s2s.cells import RecurrentCell
from s2s.config import ModelConfig, read_saved_config
from s2s.core import cell_registry
from s2s.core.cell_registry import cell_factory
from s2s.core.initialisation import initialise
from s2s.core.seq2seq import Seq2Seq
from s2s.errors import S2SError
from s2s.inspect.model_card import format_card, model_card
from s2s.tasks.language_model.model import build_language_model
from s2s.tasks.recipe import load_config


def test_uniform_draws_every_parameter_within_the_range_and_keeps_padding_zero() -> None:
    model = make_model(init="uniform", init_range=0.05, tie_embeddings=False)
    initialise(model, model.config)
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= 0.05, name
        if parameter.numel() >= 64:  # a real draw, not a constant or a rescaled default
            assert parameter.abs().max() > 0.04, name
            assert parameter.std().item() == pytest.approx(0.05 / 3**0.5, rel=0.25), name
    for embedding in (model.src_embed, model.tgt_embed):
        assert torch.count_nonzero(embedding.weight[embedding.padding_idx]) == 0


def test_uniform_reaches_a_language_models_parameters(tmp_path: Path) -> None:
    config = load_config(tiny_recipe(tmp_path), ["model.init=uniform", "model.init_range=0.02"])
    model = initialise(build_language_model(config, 50), config.model)
    assert all(p.abs().max() <= 0.02 for p in model.parameters())
    assert torch.count_nonzero(model.embed.weight[model.embed.padding_idx]) == 0


def test_pytorch_leaves_each_layers_own_initialisation() -> None:
    model = make_model(init="pytorch", tie_embeddings=False)
    before = [p.detach().clone() for p in model.parameters()]
    initialise(model, model.config)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model.src_embed.weight.std() > 0.5  # nn.Embedding's N(0, 1)


def test_training_starts_from_the_configured_initialisation(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "model.init_range=0.01")  # "uniform" is the default
    assert all(p.abs().max() <= 0.01 for p in trainer.model.parameters())


def test_a_resumed_run_keeps_its_weights_and_how_they_started(tmp_path: Path) -> None:
    make_trainer(tmp_path, "model.init=pytorch", "train.max_steps=2", "train.valid_every=2").train()
    trained = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=False)["model"]
    resumed = make_trainer(tmp_path, "model.init=uniform", "train.max_steps=3")
    assert resumed.progress.step == 2
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    card = model_card(tmp_path / "run")
    assert card["model"]["init"] == "pytorch"
    assert "init PyTorch defaults" in format_card(card)


def test_a_run_saved_before_model_init_existed_resumes_as_pytorch(tmp_path: Path) -> None:
    make_trainer(tmp_path, "model.init=pytorch", "train.max_steps=2", "train.valid_every=2").train()
    last = tmp_path / "run/checkpoints/last.pt"
    payload = torch.load(last, weights_only=False)
    payload["config"] = _without_init(payload["config"])  # as older s2s wrote it
    torch.save(payload, last)
    config_file = tmp_path / "run/config.toml"
    config_file.write_text(_without_init(config_file.read_text()))
    assert read_saved_config(config_file).model.init == "pytorch"
    resumed = make_trainer(tmp_path, "model.init=uniform", "train.max_steps=3")
    assert resumed.progress.step == 2 and resumed.config.model.init == "pytorch"
    assert "init PyTorch defaults" in format_card(model_card(tmp_path / "run"))


def _without_init(toml_text: str) -> str:
    lines = toml_text.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("init =", "init_range ="))]
    assert len(kept) == len(lines) - 2
    return "".join(kept)


@pytest.mark.parametrize(
    ("override", "message"),
    [("model.init=xavier", "model.init"), ("model.init_range=0", "model.init_range")],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(S2SError, match=message):
        load_config(tiny_recipe(tmp_path), [override])


@torch.no_grad()
def uniform_everything(model: torch.nn.Module, bound: float) -> None:
    """The uniform init as it was before cells could keep their own (every recipe's BLEU
    was measured with it): every parameter in ±bound, in order; padding rows zero."""
    for parameter in model.parameters():
        parameter.uniform_(-bound, bound)
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "crnn"])
def test_built_in_cells_with_default_options_start_as_before(cell: str) -> None:
    """A model of a built-in cell with default options draws exactly the numbers it drew
    when the uniform init redrew every parameter: recipes/mt.toml trains as measured."""
    model = make_model(cell, init="uniform", tie_embeddings=False)
    reference = make_model(cell, init="uniform", tie_embeddings=False)
    torch.manual_seed(7)
    initialise(model, model.config)
    torch.manual_seed(7)
    uniform_everything(reference, 0.1)
    for (name, value), expected in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, expected), name


def built_with(cell: str, options: dict[str, Any]) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(embed_size=8, hidden_size=12, dropout=0.0, tie_embeddings=False)
    model = Seq2Seq(config, cell_factory(cell, options), VOCAB, VOCAB, 0, share_vocab=True)
    return initialise(model, config)  # "uniform" in ±0.1 is the default


def test_a_set_forget_bias_survives_the_default_init() -> None:
    model = built_with("lstm", {"forget_bias": 2.0})
    cells = [m for m in model.modules() if isinstance(m, RecurrentCell)]
    assert cells
    for cell in cells:
        forget = slice(cell.hidden_size, 2 * cell.hidden_size)
        assert torch.all(cell.rnn.bias_ih_l0[forget] == 2.0)
        assert not cell.rnn.bias_hh_l0[forget].any()
        assert cell.rnn.bias_ih_l0[: cell.hidden_size].abs().max() <= 0.1  # the rest is drawn
        assert cell.rnn.weight_hh_l0.abs().max() <= 0.1


def test_an_unset_forget_bias_is_one_under_pytorch_and_drawn_under_uniform() -> None:
    cell = cell_factory("lstm", {})(4, 6)
    assert torch.all(cell.rnn.bias_ih_l0[6:12] == 1.0) and not cell.rnn.bias_hh_l0[6:12].any()
    cell.init_uniform(0.1)
    assert cell.rnn.bias_ih_l0[6:12].abs().max() <= 0.1 and cell.rnn.bias_hh_l0[6:12].any()


class KeepsItsRecurrence(Elman):
    """A plugin cell that starts its recurrent weights at the identity (IRNN, Le et al.
    2015) and leaves the rest to the core."""

    def __init__(self, input_size: int, hidden_size: int, scale: float = 1.0) -> None:
        super().__init__(input_size, hidden_size, scale)
        with torch.no_grad():
            self.recurrent.weight.copy_(torch.eye(hidden_size))

    @torch.no_grad()
    def init_uniform(self, init_range: float) -> None:
        for parameter in self.input.parameters():
            parameter.uniform_(-init_range, init_range)


def test_a_plugin_cell_keeps_its_own_initialisation_under_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        cell_registry, "load_cell_class", lambda name, key="model.cell": KeepsItsRecurrence
    )
    model = built_with("irnn", {})
    cells = [m for m in model.modules() if isinstance(m, KeepsItsRecurrence)]
    assert cells
    for cell in cells:
        assert torch.equal(cell.recurrent.weight, torch.eye(cell.hidden_size))
        assert cell.input.weight.abs().max() <= 0.1
    assert model.src_embed.weight.abs().max() <= 0.1  # the core's own layers are drawn


def test_a_cell_without_the_hook_is_drawn_uniformly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cell_registry, "load_cell_class", lambda name, key="model.cell": Elman)
    model = built_with("elman", {})
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= 0.1, name
        assert parameter.abs().max() > 0.05, name
