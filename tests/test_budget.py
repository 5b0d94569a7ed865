"""Training to a wall-clock budget: the time-driven schedule, validations spaced by their
cost, and the end that keeps the best checkpoint average."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

from s2s.config import BUDGET_KEEP_LAST, BUDGET_MAX_EPOCHS
from s2s.errors import ConfigError, S2SError
from s2s.run.averaging import best_average
from s2s.run.checkpoint import load_checkpoint, save_checkpoint
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.train.budget import BudgetPlan, parse_duration
from s2s.train.schedule import LearningRateSchedule


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("60m", 60.0), ("1h", 60.0), ("1h30m", 90.0), ("90", 90.0), ("45s", 0.75), ("2.5h", 150)],
)
def test_a_budget_reads_as_minutes_or_a_duration(text: str, minutes: float) -> None:
    assert parse_duration(text) == minutes


@pytest.mark.parametrize("text", ["", "x", "1h 30m", "0", "-5", "inf", "nan", "5d"])
def test_a_bad_budget_is_a_one_line_error(text: str) -> None:
    with pytest.raises(S2SError, match=rf"^--budget {text!r}: "):
        parse_duration(text)


def test_the_plan_decays_to_the_floor_at_the_deadline_and_bounds_validation() -> None:
    plan = BudgetPlan(minutes=10, share=0.1)
    assert plan.decay(0) == 1.0 and plan.decay(300) == pytest.approx(0.5)
    assert plan.decay(600) == pytest.approx(0.0) and plan.decay(900) == pytest.approx(0.0)
    # a 20 s validation may take 10 %: the next comes 180 s of training later
    assert plan.next_validation(ended=100, cost=20) == pytest.approx(280)
    # a cheap validation is still not repeated more often than every 2 % of the budget
    assert plan.next_validation(ended=100, cost=0.1) == pytest.approx(112)
    # training stops early enough for the last validation and 5 averages to be scored
    assert plan.training_deadline(validation_cost=20, final_validations=5) == 600 - 120
    assert plan.training_deadline(validation_cost=200, final_validations=5) == 300


def budget_config(folder: Path, *overrides: str):
    return load_config(tiny_recipe(folder, pairs=100), list(overrides))


def test_a_budget_brings_its_schedule_and_keeps_checkpoints_to_average(tmp_path: Path) -> None:
    train = budget_config(tmp_path, "train.budget_minutes=30").train
    assert (train.schedule, train.keep_last) == ("budget", BUDGET_KEEP_LAST)
    assert train.max_epochs == BUDGET_MAX_EPOCHS  # the budget, not an epoch count, ends it
    # a recipe's step-driven schedule and epoch count give way to the deadline (mt.toml sets
    # inverse_sqrt and 30 epochs); a schedule that assumes no step count is kept
    for schedule in ("inverse_sqrt", "cosine"):
        recipe = budget_config(
            tmp_path,
            "train.budget_minutes=30",
            f"train.schedule={schedule}",
            "train.max_epochs=3",
            "train.max_minutes=25",  # lm.toml's cap: the budget is the time limit now
        ).train
        assert (recipe.schedule, recipe.max_epochs) == ("budget", BUDGET_MAX_EPOCHS)
        assert recipe.max_minutes == 0.0 and recipe.patience == 0
    chosen = budget_config(
        tmp_path, "train.budget_minutes=30", "train.schedule=plateau", "train.keep_last=2"
    ).train
    assert (chosen.schedule, chosen.keep_last) == ("plateau", 2)
    with pytest.raises(ConfigError, match="schedule = 'budget' needs budget_minutes > 0"):
        budget_config(tmp_path, "train.schedule=budget")


def test_the_budget_schedule_warms_up_then_follows_elapsed_time(tmp_path: Path) -> None:
    train = budget_config(
        tmp_path, "train.budget_minutes=10", "train.warmup_steps=10", "train.lr=0.01",
        "train.min_lr=0.0001",
    ).train  # fmt: skip
    schedule = LearningRateSchedule(train, total_steps=1)
    assert schedule.rate(4, elapsed=1.0) == pytest.approx(0.005)  # warm-up counts steps
    assert schedule.rate(50, elapsed=0.0) == pytest.approx(0.01)
    assert schedule.rate(50, elapsed=300.0) == pytest.approx(0.0001 + 0.0099 / 2)
    assert schedule.rate(10_000, elapsed=600.0) == pytest.approx(0.0001)
    assert schedule.rate(50, elapsed=600.0) == schedule.rate(10_000, elapsed=600.0)


class ScriptedScores:
    """A task whose validation score of a checkpoint is written inside it."""

    decode_command = "translate"

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        weight = load_checkpoint(checkpoint)["model"]["w"]
        return {"valid_bleu": round(float(weight), 2)}


def step_checkpoints_with(folder: Path, weights: list[float]) -> RunDir:
    run = RunDir(folder)
    run.checkpoints.mkdir(parents=True)
    for step, weight in enumerate(weights, 1):
        save_checkpoint(run.checkpoints / f"step-{step}.pt", {"model": {"w": torch.tensor(weight)}})
    return run


def test_the_best_scoring_average_is_kept_and_the_others_deleted(tmp_path: Path) -> None:
    # averages of the last 2, 3, 4: 25.0, 30.0, 27.5 against a best single checkpoint of 29
    run = step_checkpoints_with(tmp_path, [20.0, 40.0, 30.0, 20.0])
    found = best_average(run, ScriptedScores(), "cpu", 5, "bleu", best=29.0)
    assert found == (run.checkpoints / "averaged-last-3.pt", 30.0)
    names = sorted(p.name for p in run.checkpoints.iterdir())
    assert [n for n in names if n.startswith("averaged")] == ["averaged-last-3.pt"]


def test_a_kept_average_is_the_runs_default_checkpoint_when_read_back(tmp_path: Path) -> None:
    """The end of a budgeted run writes the average first in best.json; loading the run
    (evaluate, translate) must read it back, not refuse its name."""
    run = step_checkpoints_with(tmp_path, [20.0, 40.0, 30.0, 20.0])
    found = best_average(run, ScriptedScores(), "cpu", 5, "bleu", best=29.0)
    assert found is not None
    entry = {"file": found[0].name, "step": 4, "metric": found[1]}
    run.write_best([entry, {"file": "step-2.pt", "step": 2, "metric": 29.0}])
    assert run.read_best()[0] == entry
    assert run.default_checkpoint() == found[0]


def test_no_average_is_kept_when_none_beats_the_best_checkpoint(tmp_path: Path) -> None:
    run = step_checkpoints_with(tmp_path, [10.0, 12.0, 11.0])
    assert best_average(run, ScriptedScores(), "cpu", 5, "bleu", best=40.0) is None
    assert not list(run.checkpoints.glob("averaged-*"))


def test_a_budgeted_run_validates_by_time_and_ends_on_its_best_checkpoint(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=200, steps=100_000)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "train", str(recipe), "--out", str(run),
         "--budget", "15s", "--set", "train.max_steps=0", "--set", "train.warmup_steps=5",
         "--set", "train.patience=0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "training stopped: reached train.budget_minutes = 0.25" in result.stderr
    assert "training for 0.25 minutes: learning rate 0.005 after 5 warm-up steps" in result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "valid_loss" in r]
    assert len(validations) >= 2
    after_warmup = [r["lr"] for r in validations if r["step"] > 5]
    assert after_warmup == sorted(after_warmup, reverse=True)  # decays with time
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert (run / "checkpoints" / best[0]["file"]).is_file()
    averaged = list((run / "checkpoints").glob("averaged-*"))
    assert len(averaged) <= 1 and all(best[0]["file"] == a.name for a in averaged)
    progress = json.loads(load_checkpoint(run / "checkpoints" / "last.pt")["progress"])
    assert progress["validation_seconds"] > 0
    assert progress["next_validation"] > progress["elapsed"] - progress["validation_seconds"]
    assert math.isfinite(progress["best_metric"])
