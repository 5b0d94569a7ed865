"""Loading a trained run for decoding: its config (with ``--set decode.key=value``), its
tokenisers, and its model built by its task and ready on a device. The task builds the
model, so this sits in the task layer, above the run directory it reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from s2s.config import Config, read_saved_config, with_decode_overrides
from s2s.core.seq2seq import Seq2Seq
from s2s.data.tokenizer import TokenizerPair, load_tokenizers
from s2s.kernels.device import resolve_device
from s2s.kernels.precision import ready_to_decode
from s2s.run.cell_record import check_recorded_cell
from s2s.run.directory import RunDir
from s2s.run.weights import load_model_weights
from s2s.tasks.registry import find_task
from s2s.tasks.task import Task


def load_run(
    path: Path,
    checkpoint: Path | None = None,
    device: str = "auto",
    amp: str | None = None,
    *,
    cast_weights: bool = True,
    decode_overrides: Sequence[str] = (),
) -> tuple[Config, TokenizerPair, Seq2Seq, torch.device]:
    """Everything text-to-text inference needs from a run directory (`load_trained_run`);
    a run of a task these loaders do not serve (a language model, say) is refused."""
    return load_trained_run(
        path,
        checkpoint,
        device,
        amp,
        cast_weights=cast_weights,
        decode_overrides=decode_overrides,
        require=lambda task, _: task.require_text_decoding(path),
    )


def load_trained_run(
    path: Path,
    checkpoint: Path | None,
    device: str,
    amp: str | None,
    *,
    cast_weights: bool,
    decode_overrides: Sequence[str],
    require: Callable[[Task, Config], None],
) -> tuple[Config, TokenizerPair, Any, torch.device]:
    """A run's config, tokenisers and model (built by its task, in eval mode on
    ``device``), after ``require`` accepted the run's task. ``decode_overrides`` (``--set
    decode.key=value``) change the saved [decode] settings, and ``amp`` then replaces
    decode.amp; the weights are stored in that precision unless ``cast_weights`` is off
    (for scoring as training does, in fp32 weights)."""
    run = RunDir(path).require()
    config = with_decode_overrides(read_saved_config(run.config_file), list(decode_overrides))
    task = find_task(config.task.type)
    require(task, config)
    check_recorded_cell(run, config)
    tokenizers = load_tokenizers(run.path, task.joint_vocabulary(config))
    model = task.build_model(config, tokenizers)
    load_model_weights(model, run, checkpoint)
    torch_device = resolve_device(device)
    model = ready_to_decode(model, config, torch_device, amp, cast_weights)
    return config, tokenizers, model, torch_device
