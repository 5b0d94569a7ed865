"""model.init: how a new model's parameters start, and that only new models get it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_model, make_trainer, tiny_recipe

from s2s.config import read_saved_config
from s2s.core.initialisation import initialise
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
