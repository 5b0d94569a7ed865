"""Loading a language-model run for scoring and sampling: its config, its one tokeniser
and its model, in eval mode on a device; a run of another task is refused."""

from __future__ import annotations

from pathlib import Path

import torch

from s2s.config import Config, read_saved_config
from s2s.data.tokenizer import Tokenizer, load_tokenizers
from s2s.errors import S2SError
from s2s.kernels.device import resolve_device
from s2s.run.cell_record import check_recorded_cell
from s2s.run.directory import RunDir
from s2s.run.weights import load_model_weights
from s2s.tasks.language_model.kind import LanguageModelKind
from s2s.tasks.language_model.model import LanguageModel, build_language_model
from s2s.tasks.registry import find_task


def load_language_model(
    run_path: Path, checkpoint: Path | None = None, device: str = "auto"
) -> tuple[Config, Tokenizer, LanguageModel, torch.device]:
    """Everything scoring and sampling need from an LM run directory, in eval mode."""
    run = RunDir(run_path).require()
    config = read_saved_config(run.config_file)
    if not isinstance(find_task(config.task.type), LanguageModelKind):
        raise S2SError(
            f"{run_path}: a {config.task.type} run, not a language model "
            "(task.type = 'language_model')"
        )
    check_recorded_cell(run, config)
    tokenizer = load_tokenizers(run.path, joint=True).src
    model = build_language_model(config, tokenizer.vocab_size)
    load_model_weights(model, run, checkpoint)
    torch_device = resolve_device(device)
    return config, tokenizer, model.to(torch_device).eval(), torch_device
