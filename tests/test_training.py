"""Training mechanics: schedule, accumulation, mixed precision, resume, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import make_trainer

from s2s.config import TrainConfig
from s2s.errors import S2SError
from s2s.train.schedule import LearningRateSchedule


def test_warmup_then_inverse_square_root() -> None:
    schedule = LearningRateSchedule(TrainConfig(lr=1.0, warmup_steps=100, min_lr=0.0), 1000)
    assert schedule.rate(0) == pytest.approx(0.01)
    assert schedule.rate(49) == pytest.approx(0.5)
    assert schedule.rate(100) == pytest.approx(1.0)
    assert schedule.rate(400) == pytest.approx(0.5)


def test_plateau_halves_after_patience_and_respects_floor() -> None:
    config = TrainConfig(lr=1.0, warmup_steps=0, schedule="plateau", plateau_patience=1, min_lr=0.3)
    schedule = LearningRateSchedule(config, 100)
    schedule.on_validation(improved=False)
    assert schedule.rate(10) == 1.0
    schedule.on_validation(improved=False)
    assert schedule.rate(10) == 0.5
    schedule.on_validation(improved=False)
    schedule.on_validation(improved=False)
    assert schedule.rate(10) == 0.3


def test_accumulation_takes_several_batches_per_step(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "train.accum_steps=3", "train.max_steps=2")
    trainer.train()
    assert trainer.progress.step == 2
    assert trainer.progress.batch_in_epoch == 6


def test_bf16_autocast_trains_on_cpu(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "train.amp=bf16", "train.max_steps=2")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
    )
    assert torch.isfinite(torch.tensor(record["valid_loss"]))


def test_fp16_without_cuda_is_an_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("fp16 is valid with CUDA")
    with pytest.raises(S2SError, match="fp16' needs a CUDA device"):
        make_trainer(tmp_path, "train.amp=fp16")


def test_a_run_directory_with_a_checkpoint_is_resumed(tmp_path: Path) -> None:
    make_trainer(tmp_path, "train.max_steps=3", "train.valid_every=3").train()
    trainer = make_trainer(tmp_path, "train.max_steps=5", "train.valid_every=3")
    assert trainer.progress.step == 3
    trainer.train()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").open()]
    assert steps == [3, 5]


def test_early_stopping_after_patience(tmp_path: Path) -> None:
    # lr 1e-30 leaves the fp32 weights unchanged: no validation after the first improves
    trainer = make_trainer(
        tmp_path,
        "train.lr=1e-30",
        "train.min_lr=0",
        "train.max_steps=50",
        "train.valid_every=1",
        "train.patience=2",
        "train.early_stopping_metric=loss",
    )
    trainer.train()
    assert trainer.progress.step < 50
    assert trainer.progress.bad_validations == 2


def test_a_run_ending_with_its_last_epoch_saves_that_epoch_as_done(tmp_path: Path) -> None:
    """The last step of the last epoch validates and saves before the epoch counter moves
    on; last.pt must still say the epoch is complete (for `s2s info` and for resuming)."""
    from s2s.run.checkpoint import load_checkpoint
    from s2s.train.trainer import Progress

    overrides = (
        "train.max_steps=0",
        "train.max_epochs=1",
        "train.valid_every=1",
        "train.patience=0",
    )
    trainer = make_trainer(tmp_path, *overrides)
    batches = len(trainer._epoch_batches(0))
    trainer.train()
    saved = load_checkpoint(trainer.run.last_checkpoint)
    progress = Progress.from_json(saved["progress"])
    assert (progress.step, progress.epoch, progress.batch_in_epoch) == (batches, 1, 0)


def fp16_on_cpu(monkeypatch) -> None:
    """The fp16 path (autocast + loss scaling) on the CPU: s2s only offers fp16 on CUDA,
    but torch's CPU autocast and GradScaler run the same trainer code."""
    from s2s.train import trainer as training

    monkeypatch.setattr(training, "resolve_amp", lambda amp, device: torch.float16)
    monkeypatch.setattr(
        training,
        "make_grad_scaler",
        lambda dtype, device: torch.amp.GradScaler("cpu", init_scale=2.0**12),
    )


def test_fp16_loss_scaling_trains_skips_overflow_and_resumes(tmp_path: Path, monkeypatch) -> None:
    fp16_on_cpu(monkeypatch)
    gru = "model.cell=gru"  # oneDNN's CPU LSTM has no fp16 kernel (cuDNN's has)
    trainer = make_trainer(tmp_path, gru, "train.max_steps=3", "train.valid_every=3")
    assert trainer.scaler.is_enabled()
    weight = trainer.model.bridge.weight
    overflow = {"steps": 1}

    def once_inf(grad: torch.Tensor) -> torch.Tensor:  # the first step's gradient overflows
        if overflow["steps"]:
            overflow["steps"] -= 1
            return grad * float("inf")
        return grad

    handle = weight.register_hook(once_inf)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = trainer.train()
    handle.remove()
    # step 1 was skipped and halved the scale; steps 2 and 3 trained
    assert trainer.scaler.get_scale() == 2.0**11
    assert int(next(iter(trainer.optimizer.state.values()))["step"]) == 2
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.isfinite(p).all() for p in after)
    assert torch.isfinite(torch.tensor(record["valid_loss"]))
    # the scale is part of the training state: a resumed run goes on with it
    resumed = make_trainer(tmp_path, gru, "train.max_steps=4", "train.valid_every=3")
    assert resumed.progress.step == 3 and resumed.scaler.get_scale() == 2.0**11
