"""The training progress line: what its loss and tokens/s figures average over."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

from s2s.config import TrainConfig
from s2s.progress import TrainingProgress
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]


def feed(bar: TrainingProgress, steps: range, losses: list[float], seconds: list[float]) -> None:
    """Steps of 10 target tokens each, with the window's running sums, as the trainer
    passes them (the window opened at the first of ``steps``)."""
    total = torch.zeros(())
    for number, (step, loss, second) in enumerate(zip(steps, losses, seconds, strict=True), 1):
        total = total + loss * 10
        bar.update(step, 1, total, 10 * number, second)


def test_the_line_covers_the_last_log_every_steps(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TrainingProgress(TrainConfig(log_every=2))
    bar.start_epoch(1, 100, 0)
    # per-token losses 1, 2, 4, 4; the window is 1 s old at step 2 and 5 s at step 4
    feed(bar, range(1, 5), [1.0, 2.0, 4.0, 4.0], [0.5, 1.0, 3.0, 5.0])
    first, second = lines_of(capsys)
    assert first.startswith("epoch 1 step 2: loss 1.500, 20 tok/s (last 2 steps)")
    # since the window opened the mean is 2.75 and 8 tok/s: the line shows steps 3 and 4
    assert second.startswith("epoch 1 step 4: loss 4.000, 5 tok/s (last 2 steps)")


def test_a_validation_starts_the_next_line_afresh(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TrainingProgress(TrainConfig(log_every=2))
    bar.start_epoch(1, 100, 0)
    feed(bar, range(1, 4), [1.0, 1.0, 9.0], [1.0, 2.0, 3.0])
    bar.report({"step": 3, "valid_bleu": 1.0})  # the trainer opens a new window after it
    feed(bar, range(4, 5), [3.0], [2.0])
    lines = lines_of(capsys)
    assert lines[-1].startswith("epoch 1 step 4: loss 3.000, 5 tok/s (last 1 step)")


def test_a_resumed_run_counts_from_where_it_resumed(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TrainingProgress(TrainConfig(log_every=4))
    bar.start_epoch(3, 100, 50)
    feed(bar, range(11, 13), [2.0, 2.0], [1.0, 2.0])
    assert lines_of(capsys)[0].startswith("epoch 3 step 12: loss 2.000, 10 tok/s (last 2 steps)")


def test_training_prints_lines_labelled_with_their_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(tmp_path, pairs=150, steps=4)
    config = load_config(recipe, ["train.log_every=2", "train.valid_every=4"])
    TranslationTrainer(config, RunDir(tmp_path / "run")).train()
    lines = lines_of(capsys)
    assert [line.split(":")[0] for line in lines] == ["epoch 1 step 2", "epoch 1 step 4"]
    assert all("(last 2 steps)" in line for line in lines)
