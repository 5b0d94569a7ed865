"""Numerical faults and memory: a non-finite loss or gradient skips the step, too many in a
row stop the run naming the batch with the last good checkpoint kept; running out of memory
is one line that suggests a smaller train.max_tokens."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

from s2s.config import TrainConfig
from s2s.errors import S2SError
from s2s.run.checkpoint import load_checkpoint
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.translation import trainer as translation_training
from s2s.tasks.translation.trainer import TranslationTrainer
from s2s.train import trainer as training
from s2s.train.faults import clip_divisor, step_unless, supports_skip_flag


def make_trainer(folder: Path, *overrides: str) -> TranslationTrainer:
    config = load_config(tiny_recipe(folder, pairs=150, steps=6), list(overrides))
    return TranslationTrainer(config, RunDir(folder / "run"), quiet=True)


def poison_loss(monkeypatch, bad_calls: set[int]) -> None:
    """Make the training loss nan on the given calls (1-based), leaving the others alone."""
    real = translation_training.label_smoothed_loss
    calls = 0

    def loss(logits, target, smoothing):
        nonlocal calls
        calls += 1
        value = real(logits, target, smoothing)
        return value * float("nan") if calls in bad_calls else value

    monkeypatch.setattr(translation_training, "label_smoothed_loss", loss)


def adam_steps(trainer: TranslationTrainer) -> int:
    return int(next(iter(trainer.optimizer.state.values()))["step"])


def test_a_nan_loss_skips_the_step_with_a_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    trainer = make_trainer(tmp_path, "train.valid_decode=false", "train.early_stopping_metric=loss")
    poison_loss(monkeypatch, {2, 3})
    with caplog.at_level(logging.WARNING, logger="s2s.train"):
        record = trainer.train()
    assert trainer.progress.step == 6
    assert adam_steps(trainer) == 4  # steps 2 and 3 left the optimiser untouched
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith("step 2: non-finite loss or gradient")
    assert "training lines" in warnings[0]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert math.isfinite(record["train_loss"])  # skipped losses are not averaged in


def test_an_infinite_gradient_with_a_finite_loss_is_skipped(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "train.max_steps=3", "train.clip_norm=0")
    weight = trainer.model.bridge.weight
    before = weight.detach().clone()
    handle = weight.register_hook(lambda grad: grad * float("inf"))
    trainer.train()
    handle.remove()
    assert trainer.progress.step == 3 and trainer.progress.bad_steps == 3
    assert torch.equal(weight.detach(), before)
    # no step was ever taken: the fused optimiser, told to skip on the device, only created
    # its state (zero moments, step 0), which is what a first step starts from anyway
    for state in trainer.optimizer.state.values():
        assert int(state["step"]) == 0
        assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()


def test_a_skipped_step_leaves_weights_and_optimizer_state_unchanged() -> None:
    layer = torch.nn.Linear(3, 4, bias=False)
    weight = layer.weight
    optimizer = training.make_optimizer(layer, TrainConfig())
    assert supports_skip_flag(optimizer)  # fused: the skip needs no host-device sync
    weight.grad = torch.randn(4, 3)
    step_unless(optimizer, torch.tensor(False))  # a good step
    saved = {k: v.clone() for k, v in optimizer.state[weight].items()}
    before = weight.detach().clone()
    weight.grad = torch.full((4, 3), float("nan"))
    step_unless(optimizer, torch.tensor(True))
    assert torch.equal(weight.detach(), before)
    assert all(torch.equal(saved[k], optimizer.state[weight][k]) for k in saved)
    assert int(optimizer.state[weight]["step"]) == 1


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_the_fused_step_clips_as_clip_grad_norm_does(optimizer_name: str) -> None:
    """Clipping folded into the fused step (a gradient divisor) moves the weights exactly as
    clip_grad_norm_ followed by the step does, and leaves gradients under the norm alone."""
    config = TrainConfig(optimizer=optimizer_name, lr=0.1)
    layers = [torch.nn.Linear(6, 5) for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    optimizers = [training.make_optimizer(layer, config) for layer in layers]
    assert all(supports_skip_flag(optimizer) for optimizer in optimizers)
    for scale in (30.0, 0.01, 30.0):  # clipped, under the norm, clipped with moments in play
        grads = [torch.randn(5, 6) * scale, torch.randn(5) * scale]
        for layer in layers:
            layer.weight.grad, layer.bias.grad = (g.clone() for g in grads)
        norm = torch.nn.utils.clip_grad_norm_(layers[0].parameters(), 1.0)
        optimizers[0].step()
        step_unless(optimizers[1], torch.tensor(False), clip_divisor(norm, 1.0))
        for mine, theirs in zip(layers[1].parameters(), layers[0].parameters(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)


def test_training_clips_the_same_in_the_fused_step_and_before_it(tmp_path: Path) -> None:
    """A trainer with a fused optimiser clips inside its step; the weights it reaches are
    those of clipping first (the path other optimisers take), and clipping did bite."""
    settings = ("train.max_steps=3", "train.clip_norm=0.05", "train.save_every=1000")
    fused = make_trainer(tmp_path / "fused", *settings)
    assert fused.skip_on_device
    first = make_trainer(tmp_path / "first", *settings)
    first.skip_on_device = False  # clip_grad_norm_, then the step
    unclipped = make_trainer(tmp_path / "unclipped", *settings[:1], "train.clip_norm=0")
    for trainer in (fused, first, unclipped):
        trainer.train()
    weights = [dict(t.model.named_parameters()) for t in (fused, first, unclipped)]
    for name, weight in weights[0].items():
        torch.testing.assert_close(weight, weights[1][name], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(w, weights[2][n]) for n, w in weights[0].items())


def test_too_many_bad_steps_stop_naming_the_batch(tmp_path: Path, monkeypatch) -> None:
    trainer = make_trainer(
        tmp_path, "train.save_every=1", "train.max_bad_steps=2", "train.max_steps=20"
    )
    poison_loss(monkeypatch, set(range(4, 100)))
    with pytest.raises(S2SError) as caught:
        trainer.train()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("stopping: 3 steps in a row had a non-finite loss or gradient")
    assert "the last at step 6, epoch 1, batch 6 (training lines " in message
    assert "train.max_bad_steps" in message
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert json.loads(saved["progress"])["step"] == 3  # the last good step, intact
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_out_of_memory_suggests_a_smaller_batch(tmp_path: Path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, "train.max_tokens=600")

    def out_of_memory(self, batches):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TranslationTrainer, "_train_step", out_of_memory)
    with pytest.raises(S2SError) as caught:
        trainer.train()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("out of memory at step 1 (epoch 1) with train.max_tokens = 600")
    assert "--set train.max_tokens=300" in message


def test_cpu_allocator_failure_is_also_out_of_memory(tmp_path: Path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path)

    def fail(self, batches):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    monkeypatch.setattr(TranslationTrainer, "_train_step", fail)
    with pytest.raises(S2SError, match="out of memory at step 1"):
        trainer.train()


def test_other_runtime_errors_are_not_disguised(tmp_path: Path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path)

    def fail(self, batches):
        raise RuntimeError("shape mismatch in a plugin")

    monkeypatch.setattr(TranslationTrainer, "_train_step", fail)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        trainer.train()


def test_cuda_asked_for_but_absent(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(S2SError, match=r"train.device = 'cuda' but no CUDA device is available"):
        make_trainer(tmp_path, "train.device=cuda")
