"""Data-parallel training: two gloo processes on the CPU take the same steps as one process
with twice the gradient accumulation, only rank 0 writes the run, and a stopped two-process
run resumes where it stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

from s2s.errors import S2SError
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.registry import find_task
from s2s.tasks.translation.trainer import TranslationTrainer
from s2s.train.distributed import Single, join

STEPS = 12  # 120 pairs make 9 batches an epoch: 5 steps of 2, the fifth with one batch
SETTINGS = [
    "train.valid_every=1",  # a metrics record, with its train_loss, after every step
    "train.valid_decode=false",
    "train.early_stopping_metric=loss",
    "train.patience=0",
    "train.tensorboard=false",
    "train.log_every=1",
]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_two_processes(
    recipe: Path, out: Path, steps: int, settings: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    sets = [f"--set={item}" for item in [*SETTINGS, *settings, f"train.max_steps={steps}"]]
    command = [sys.executable, "-m", "s2s", "train", str(recipe), "--out", str(out)]
    return subprocess.run(
        [*command, *sets, "--devices", "2"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One process with accum_steps=2, and two processes with accum_steps=1 stopped at
    step 6 and resumed to the end."""
    folder = tmp_path_factory.mktemp("ddp")
    recipe = tiny_recipe(folder, pairs=120, steps=STEPS)
    single = folder / "single"
    config = load_config(recipe, [*SETTINGS, "train.accum_steps=2"])
    TranslationTrainer(config, RunDir(single), quiet=True).train()
    double = folder / "double"
    first = train_two_processes(recipe, double, steps=6)
    assert first.returncode == 0, first.stderr[-3000:]
    stopped = records(double)
    second = train_two_processes(recipe, double, steps=STEPS)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"single": single, "double": double, "stopped": stopped, "logs": [first, second]}


def test_two_processes_follow_the_loss_curve_of_one_with_doubled_accumulation(runs) -> None:
    single, double = records(runs["single"]), records(runs["double"])
    assert [r["step"] for r in double] == list(range(1, STEPS + 1))
    assert [r["epoch"] for r in double] == [r["epoch"] for r in single]  # 5 steps an epoch
    assert double[-1]["epoch"] == 3
    for one, two in zip(single, double, strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=5e-4), one["step"]
        assert two["valid_loss"] == pytest.approx(one["valid_loss"], abs=5e-4), one["step"]
        assert two["lr"] == pytest.approx(one["lr"])
    assert double[-1]["train_loss"] < double[0]["train_loss"] - 0.3  # it did learn


def test_only_rank_zero_writes_the_run(runs) -> None:
    double = runs["double"]
    assert len(records(double)) == STEPS  # one record per validation, not one per rank
    about = json.loads((double / "about.json").read_text(encoding="utf-8"))
    assert [s["from_step"] for s in about["sessions"]] == [0, 6]
    for log, step in zip(runs["logs"], (3, 9), strict=True):  # one voice: rank 0's
        assert log.stderr.count(f" step {step}: loss") == 1
        assert log.stderr.count("s2s: run directory") == 1
    last = torch.load(double / "checkpoints" / "last.pt", weights_only=True)
    assert json.loads(last["progress"])["step"] == STEPS


def test_a_stopped_two_process_run_resumes_where_it_stopped(runs) -> None:
    assert [r["step"] for r in runs["stopped"]] == list(range(1, 7))
    assert "resuming from step 6 (epoch 2)" in runs["logs"][1].stderr
    resumed = records(runs["double"])[:6]
    assert resumed == runs["stopped"]  # the first session's records are kept as they were


def test_input_feeding_two_processes_follow_one_with_doubled_accumulation(tmp_path) -> None:
    """Input feeding trains the decoder step by step, and on the CPU its LSTM and combine
    layer produce their weight gradients only once the whole pass is back-propagated
    (s2s.kernels.time_batched_linear): DDP must still average those across processes."""
    steps, feeding = 4, ("model.input_feeding=true",)
    recipe = tiny_recipe(tmp_path, pairs=120, steps=steps)
    config = load_config(recipe, [*SETTINGS, *feeding, "train.accum_steps=2"])
    TranslationTrainer(config, RunDir(tmp_path / "single"), quiet=True).train()
    run = train_two_processes(recipe, tmp_path / "double", steps, feeding)
    assert run.returncode == 0, run.stderr[-3000:]
    single, double = records(tmp_path / "single"), records(tmp_path / "double")
    assert [r["step"] for r in double] == list(range(1, steps + 1))
    for one, two in zip(single, double, strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=5e-4), one["step"]
        assert two["valid_loss"] == pytest.approx(one["valid_loss"], abs=5e-4), one["step"]


def test_outside_torchrun_training_is_one_process(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert isinstance(join(torch.device("cpu"), find_task("translation")), Single)


def test_tasks_without_ddp_support_refuse_clearly(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(S2SError, match=r"DDP does not serve task\.type 'language_model' yet"):
        join(torch.device("cpu"), find_task("language_model"))


def test_more_processes_than_cuda_devices_is_a_clear_error(monkeypatch) -> None:
    from s2s.train.distributed import Distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    member = object.__new__(Distributed)  # the device check needs no process group
    member.rank, member.local_rank = 2, 2
    with pytest.raises(S2SError) as caught:
        member.device(torch.device("cuda"))
    assert str(caught.value) == (
        "process 2 (LOCAL_RANK 2) has no CUDA device: this node has 2; "
        "start at most 2 processes per node"
    )
