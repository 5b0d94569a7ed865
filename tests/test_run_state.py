"""What a run directory holds after training stays consistent, whatever sessions it took:
`last.pt` holds the state after the last validation, a finished run appends nothing when
run again, resume keeps every kept best checkpoint, and metrics.jsonl is strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.inspect.plots import plot_learning_curves
from s2s.run.checkpoint import load_checkpoint
from s2s.run.directory import RunDir
from s2s.run.metrics_log import read_metrics
from s2s.run.resume import check_resumable
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer

# the last step is a save_every step, and no step but the last is validated
SAVED_EVERY_STEP = ["train.valid_every=100", "train.save_every=1", "train.threads=1"]


def train(recipe: Path, out: Path, *overrides: str) -> dict:
    config = load_config(recipe, [*SAVED_EVERY_STEP, *overrides])
    return TranslationTrainer(config, RunDir(out), quiet=True).train()


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


def strict_records(log: Path) -> list[dict]:
    """The metrics log read as strict JSON: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{log}: {name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("metric", ["loss", "bleu"])
def test_a_nan_model_is_never_best(recipe: Path, tmp_path: Path, monkeypatch, metric: str) -> None:
    """Weights gone NaN after step 2 (as a huge learning rate does): the validation at step 4
    is logged as null, not kept as best, and counts against patience."""
    step = TranslationTrainer._train_step

    def poisoned(self, batches, idle=False):
        result = step(self, batches, idle)
        if self.progress.step == 2:  # the step now taken is the third
            for parameter in self.model.parameters():
                parameter.data.fill_(float("nan"))
        return result

    monkeypatch.setattr(TranslationTrainer, "_train_step", poisoned)
    out = tmp_path / "run"
    overrides = ["train.valid_every=2", f"train.early_stopping_metric={metric}"]
    train(recipe, out, "train.max_steps=4", *overrides)
    first, second = strict_records(out / "metrics.jsonl")
    assert first["best"] and not second["best"]
    assert second["valid_loss"] is None and second["valid_ppl"] is None
    run = RunDir(out)
    assert [entry["file"] for entry in run.read_best()] == ["step-2.pt"]
    assert not (run.checkpoints / "step-4.pt").exists()
    progress = saved_progress(out)
    assert progress["bad_validations"] == 1
    assert read_metrics(run.metrics_log)[1]["valid_loss"] is None
    assert plot_learning_curves([out], tmp_path / "curves.png").stat().st_size > 0
    best = first["valid_loss" if metric == "loss" else "valid_bleu"]
    assert progress["best_metric"] == pytest.approx(best, abs=1e-4)  # the log rounds


def test_changing_the_ranking_metric_on_resume_is_refused(recipe: Path, tmp_path: Path) -> None:
    """Kept checkpoints ranked by loss are not compared with BLEU values: one line, exit 1,
    and the run is left as it was."""
    out = tmp_path / "run"
    train(recipe, out, "train.max_steps=2", "train.early_stopping_metric=loss")
    before = {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    sets = [arg for item in SAVED_EVERY_STEP for arg in ("--set", item)]
    args = ["train", str(recipe), "--out", str(out), *sets, "-q"]
    more = ["--set", "train.max_steps=4", "--set", "train.early_stopping_metric=bleu"]
    result = CliRunner().invoke(app, [*args, *more])
    assert result.exit_code == 1
    last = out / "checkpoints" / "last.pt"
    assert result.output == (
        f"s2s: error: {last}: train.early_stopping_metric changed from 'loss' to 'bleu', "
        "but the run's best checkpoints and patience are ranked by 'loss'; "
        "keep 'loss', or use --restart or another --out\n"
    )
    assert {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_the_ranking_metric_may_change_before_anything_is_ranked(
    recipe: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(recipe, out, "train.max_steps=2", "train.early_stopping_metric=loss")
    payload = load_checkpoint(out / "checkpoints" / "last.pt")
    progress = {**json.loads(payload["progress"]), "best": [], "best_metric": None}
    payload["progress"] = json.dumps(progress)
    config = load_config(recipe, [*SAVED_EVERY_STEP, "train.early_stopping_metric=bleu"])
    check_resumable(payload, config, out / "checkpoints" / "last.pt")  # no error


def test_a_best_checkpoint_gone_from_disk_is_not_listed(recipe: Path, tmp_path: Path) -> None:
    """A best checkpoint deleted after last.pt was written (by a kill between a validation's
    pruning and its save, or by hand) is dropped from best.json on resume, so `translate`
    never picks a missing file."""
    out = tmp_path / "run"
    train(recipe, out, "train.max_steps=3", "train.early_stopping_metric=loss")
    (out / "checkpoints" / "step-3.pt").unlink()
    train(recipe, out, "train.max_steps=6", "train.early_stopping_metric=loss")
    run = RunDir(out)
    assert [entry["file"] for entry in run.read_best()] == ["step-6.pt"]
    assert run.default_checkpoint().is_file()
