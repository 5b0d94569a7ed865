"""What a run directory holds after training stays consistent, whatever sessions it took:
`last.pt` holds the state after the last validation, a finished run appends nothing when
run again, resume keeps every kept best checkpoint, and metrics.jsonl is strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_recipe

from s2s.checkpoint import load_checkpoint
from s2s.config import load_config
from s2s.run_dir import RunDir
from s2s.training import Trainer

# the last step is a save_every step, and no step but the last is validated
SAVED_EVERY_STEP = ["train.valid_every=100", "train.save_every=1", "train.threads=1"]


def train(recipe: Path, out: Path, *overrides: str) -> dict:
    config = load_config(recipe, [*SAVED_EVERY_STEP, *overrides])
    return Trainer(config, RunDir(out), quiet=True).train()


def saved_progress(out: Path) -> dict:
    return json.loads(load_checkpoint(out / "checkpoints" / "last.pt")["progress"])


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return tiny_recipe(tmp_path_factory.mktemp("state"), pairs=150, steps=3)


def test_last_checkpoint_holds_the_final_validation(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(recipe, out, "train.max_steps=3")
    progress = saved_progress(out)
    assert progress["step"] == 3
    assert progress["validated_step"] == 3
    assert [entry["file"] for entry in progress["best"]] == ["step-3.pt"]


def test_rerunning_a_finished_run_appends_nothing(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(recipe, out, "train.max_steps=3")
    log = (out / "metrics.jsonl").read_text()
    record = train(recipe, out, "train.max_steps=3")
    assert (out / "metrics.jsonl").read_text() == log  # no second validation of step 3
    assert record["step"] == 3 and record["train_loss"] > 0


def test_resuming_further_keeps_every_best_checkpoint(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(recipe, out, "train.max_steps=3", "train.early_stopping_metric=loss")
    train(recipe, out, "train.max_steps=6", "train.early_stopping_metric=loss")
    run = RunDir(out)
    listed = [entry["file"] for entry in run.read_best()]
    assert sorted(listed) == ["step-3.pt", "step-6.pt"]  # keep_best = 2
    assert all((run.checkpoints / name).is_file() for name in listed)
    assert saved_progress(out)["best"] == run.read_best()
    steps = [json.loads(line)["step"] for line in run.metrics_log.read_text().splitlines()]
    assert steps == [3, 6]
