"""`tokenizer.model`: a run that uses an existing sentencepiece model instead of training one,
so two runs share a vocabulary (ensembles, language-model fusion)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_recipe

from s2s.errors import ConfigError, S2SError
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer


def test_a_run_adopts_another_runs_tokenizer(trained_run: Path, tmp_path: Path) -> None:
    model = trained_run / "spm.model"
    config = load_config(
        tiny_recipe(tmp_path, pairs=60, steps=2),
        [f"tokenizer.model={model}", "tokenizer.vocab_size=100"],  # the size is the model's
    )
    run = RunDir(tmp_path / "run")
    TranslationTrainer(config, run, quiet=True).train()
    assert (run.path / "spm.model").read_bytes() == model.read_bytes()


def test_a_missing_tokenizer_model_is_a_recipe_error(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=20)
    with pytest.raises(ConfigError, match=r"tokenizer.model: file not found: .*nope.model"):
        load_config(recipe, [f"tokenizer.model={tmp_path / 'nope.model'}"])


def test_a_file_that_is_no_sentencepiece_model_is_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.model"
    bogus.write_bytes(b"not a model")
    config = load_config(tiny_recipe(tmp_path, pairs=20), [f"tokenizer.model={bogus}"])
    with pytest.raises(S2SError, match=r"^tokenizer.model: .*bogus.model is not a sentencepiece"):
        TranslationTrainer(config, RunDir(tmp_path / "run"), quiet=True)
