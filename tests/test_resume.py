"""Exact resume: a run killed (SIGKILL) or stopped (SIGINT/SIGTERM) mid-epoch and resumed
ends bit-identical to an uninterrupted run; a changed model is refused; --restart starts
over. Training runs in subprocesses with one thread and dropout on, so that the dropout RNG
has to be restored too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.errors import S2SError
from s2s.run.checkpoint import load_checkpoint, save_checkpoint
from s2s.run.directory import RunDir
from s2s.run.resume import changed_keys, model_changes, read_last_record, trim_metrics_log
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer

STEPS = 14
SETTINGS = [
    f"train.max_steps={STEPS}",
    "train.valid_every=5",
    "train.save_every=3",
    "model.dropout=0.3",
    "train.threads=1",
]
# Runs the CLI with every training step announced on stderr and slowed down, so a test can
# send a signal while a known step is running. The step itself is unchanged.
SLOW_CLI = """
import sys, time
from s2s.train import trainer as training
step = training.Trainer._train_step
delay = float(sys.argv[1])
def slow(self, batches):
    print(f"@step {self.progress.step + 1}", file=sys.stderr, flush=True)
    time.sleep(delay)
    return step(self, batches)
training.Trainer._train_step = slow
from s2s.cli import main
sys.argv = ["s2s", *sys.argv[2:]]
main()
"""


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def trainer(recipe: Path, out: Path, *extra: str) -> TranslationTrainer:
    """A trainer in this process (one thread, like the subprocesses): faster to start."""
    return TranslationTrainer(load_config(recipe, [*SETTINGS, *extra]), RunDir(out), quiet=True)


def start_slow(recipe: Path, out: Path, seconds: float) -> subprocess.Popen:
    sets = [arg for item in SETTINGS for arg in ("--set", item)]
    command = [sys.executable, "-c", SLOW_CLI, str(seconds), "train", str(recipe)]
    return subprocess.Popen(
        [*command, "--out", str(out), *sets],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=environment(),
    )


def wait_for_step(process: subprocess.Popen, step: int) -> list[str]:
    """Read stderr until the process announces ``step``; returns the lines read."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.strip() == f"@step {step}":
            return lines
    raise AssertionError(f"the run ended before step {step}:\n{''.join(lines)}")


def copy_tokenizer(reference: Path, out: Path) -> None:
    """Share the reference's tokeniser (and its cached tokenisation) with another run."""
    out.mkdir(parents=True)
    shutil.copy(reference / "spm.model", out / "spm.model")
    shutil.copytree(reference / "cache", out / "cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """A recipe and its uninterrupted run of STEPS steps."""
    folder = tmp_path_factory.mktemp("resume")
    recipe = tiny_recipe(folder, pairs=150, steps=STEPS)
    trainer(recipe, folder / "reference").train()
    return recipe, folder / "reference"


def assert_same_state(run: Path, reference: Path) -> None:
    """Weights, optimiser moments, schedule, RNG and progress all equal, bit for bit."""
    ours = load_checkpoint(run / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference / "checkpoints" / "last.pt")
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    for key, state in theirs["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(ours["optimizer"]["state"][key][field], value), (key, field)
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])
    assert ours["rng"]["python"] == theirs["rng"]["python"]
    assert ours["rng"]["numpy"] == theirs["rng"]["numpy"]
    progress, expected = json.loads(ours["progress"]), json.loads(theirs["progress"])
    for key in ("step", "epoch", "batch_in_epoch", "best_metric"):
        assert progress[key] == expected[key], key


def validation_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["valid_loss"]) for r in records]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference, tmp_path: Path) -> None:
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    copy_tokenizer(uninterrupted, out)
    process = start_slow(recipe, out, 0.1)
    wait_for_step(process, 8)  # checkpoints exist for steps 3, 5 (validation) and 6
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    progress = json.loads(saved["progress"])
    assert progress["step"] == 6 and progress["epoch"] == 0  # mid-epoch, steps 7-8 are lost
    resumed = trainer(recipe, out)
    assert resumed.progress.step == 6
    resumed.train()
    assert_same_state(out, uninterrupted)
    assert validation_losses(out) == validation_losses(uninterrupted)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_saves_the_step_and_resume_is_bit_identical(
    reference, tmp_path: Path, signum: int, status: int
) -> None:
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    copy_tokenizer(uninterrupted, out)
    process = start_slow(recipe, out, 0.1)
    wait_for_step(process, 8)
    process.send_signal(signum)
    assert process.wait(timeout=30) == status
    assert process.stderr is not None
    message = process.stderr.read()
    name = signal.Signals(signum).name
    assert f"s2s: {name}: stopped at step 8; checkpoint saved in" in message
    assert f"resume with: s2s train {recipe} --out {out}" in message
    assert "Traceback" not in message
    resumed = trainer(recipe, out)
    assert resumed.progress.step == 8
    resumed.train()
    assert_same_state(out, uninterrupted)


def test_second_ctrl_c_aborts_at_once(reference, tmp_path: Path) -> None:
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    copy_tokenizer(uninterrupted, out)
    process = start_slow(recipe, out, 20.0)  # a step that would take 20 s
    wait_for_step(process, 1)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    # exits long before the 20 s step ends (no timing asserted: a loaded machine is slow)
    assert process.wait(timeout=15) == 130
    assert process.stderr is not None
    assert "s2s: interrupted" in process.stderr.read()
    assert not (out / "checkpoints" / "last.pt").exists()  # aborted: nothing saved


def test_a_changed_model_is_refused_naming_the_keys(reference, tmp_path: Path) -> None:
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    config_before = (out / "config.toml").read_text()
    with pytest.raises(S2SError) as caught:
        trainer(recipe, out, "model.hidden_size=64", "tokenizer.vocab_size=200", "model.dropout=0")
    message = str(caught.value)
    assert "\n" not in message
    # dropout only regularises training: changing it is allowed, so it is not named
    assert "the recipe changes the saved model (model.hidden_size, tokenizer.vocab_size)" in message
    assert "--restart" in message
    assert (out / "config.toml").read_text() == config_before  # nothing rewritten


def test_restart_starts_over_with_a_new_model(reference, tmp_path: Path) -> None:
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    sets = [arg for item in [*SETTINGS, "model.hidden_size=32"] for arg in ("--set", item)]
    args = ["train", str(recipe), "--out", str(out), "--restart", *sets, "-q"]
    result = CliRunner().invoke(app, [*args, "--set", "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    assert [step for step, _ in validation_losses(out)] == [2]
    assert "hidden_size = 32" in (out / "config.toml").read_text()
    ours = load_checkpoint(out / "checkpoints" / "last.pt")["model"]["bridge.weight"]
    theirs = load_checkpoint(uninterrupted / "checkpoints" / "last.pt")["model"]["bridge.weight"]
    assert ours.shape != theirs.shape


def test_a_finished_run_is_not_trained_further(reference, tmp_path: Path) -> None:
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    record = trainer(recipe, out).train()
    assert record["step"] == STEPS
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert validation_losses(out) == validation_losses(uninterrupted)  # no duplicate record


def test_metrics_after_the_checkpoint_and_a_torn_line_are_dropped(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 5, "valid_loss": 4.0}\n{"step": 10, "valid_loss": 3.0}\n{"step": 1')
    assert trim_metrics_log(log, 6) == 2
    assert log.read_text() == '{"step": 5, "valid_loss": 4.0}\n'
    assert read_last_record(log) == {"step": 5, "valid_loss": 4.0}
    assert trim_metrics_log(log, 6) == 0


def test_only_keys_that_change_the_model_block_a_resume(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=5)
    saved = load_config(recipe)
    wanted = load_config(
        recipe, ["model.dropout=0.5", "train.lr=0.1", "model.cell_options.forget_bias=0.5"]
    )
    changed = changed_keys(saved, wanted)
    assert changed == ["model.cell_options.forget_bias", "model.dropout", "train.lr"]
    assert model_changes(changed) == ["model.cell_options.forget_bias"]


class Killed(Exception):
    """Stands for SIGKILL in this process: training ends with no save."""


def test_train_loss_after_a_mid_interval_resume_is_exact(
    reference, tmp_path: Path, monkeypatch
) -> None:
    """Killed at step 3, after the save at step 2 and before the validation at step 4: the
    resumed run's train_loss at step 4 still averages steps 1-4, as an uninterrupted run's."""
    recipe, tokenised = reference
    interval = ["train.max_steps=4", "train.valid_every=4", "train.save_every=2"]
    whole, out = tmp_path / "whole", tmp_path / "run"
    copy_tokenizer(tokenised, whole)
    copy_tokenizer(tokenised, out)
    trainer(recipe, whole, *interval).train()
    step = TranslationTrainer._train_step

    def killed_at_step_3(self, batches, idle=False):
        if self.progress.step == 2:
            raise Killed
        return step(self, batches, idle)

    monkeypatch.setattr(TranslationTrainer, "_train_step", killed_at_step_3)
    with pytest.raises(Killed):
        trainer(recipe, out, *interval).train()
    monkeypatch.setattr(TranslationTrainer, "_train_step", step)
    resumed = trainer(recipe, out, *interval)
    assert resumed.progress.step == 2
    resumed.train()
    ours, theirs = (read_last_record(run / "metrics.jsonl") for run in (out, whole))
    assert ours["step"] == theirs["step"] == 4
    assert ours["train_loss"] == theirs["train_loss"]
    assert ours["valid_loss"] == theirs["valid_loss"]


def test_a_checkpoint_without_a_loss_window_still_resumes(reference, tmp_path: Path) -> None:
    """Checkpoints from before the loss window was saved resume with an empty one."""
    recipe, uninterrupted = reference
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    last = out / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    progress = json.loads(payload["progress"])
    payload["progress"] = json.dumps({k: v for k, v in progress.items() if "window" not in k})
    save_checkpoint(last, payload)
    record = trainer(recipe, out, f"train.max_steps={STEPS + 2}").train()
    assert record["step"] == STEPS + 2 and record["train_loss"] > 0
