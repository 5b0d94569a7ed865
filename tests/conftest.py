"""Shared fixtures: one tiny trained run for the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_recipe


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory trained for a few steps; shared by the inference tests."""
    from s2s.run.directory import RunDir
    from s2s.tasks.recipe import load_config
    from s2s.tasks.translation.trainer import TranslationTrainer

    folder = tmp_path_factory.mktemp("tiny")
    config = load_config(tiny_recipe(folder))
    run = RunDir(folder / "run")
    TranslationTrainer(config, run, quiet=True).train()
    return run.path
