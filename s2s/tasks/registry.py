"""Which trainer serves each `task.type`; imported lazily so one task's dependencies
(audio libraries, say) never load for another."""

from __future__ import annotations

import importlib

from s2s.config import Config
from s2s.errors import S2SError
from s2s.run.directory import RunDir

# task.type -> "module:Class" of its Trainer subclass.
TRAINERS = {
    "translation": "s2s.train.trainer:Trainer",
    "summarization": "s2s.tasks.summarization.trainer:SummarizationTrainer",
    "language_model": "s2s.tasks.language_model.trainer:LanguageModelTrainer",
    "speech": "s2s.tasks.speech.trainer:SpeechTrainer",
}


def check_before_work(config: Config) -> None:
    """What a recipe needs beyond its schema, checked when it is read: before a tokeniser
    is trained or a run directory made (or cleared by --restart)."""
    check_task_extras(config)
    check_model_builds(config)


def check_task_extras(config: Config) -> None:
    """The optional packages the task's training needs are installed."""
    if config.task.type == "speech":
        from s2s.tasks.speech.audio import check_speech_extra

        check_speech_extra()
    elif config.task.type == "summarization" and config.train.valid_decode:
        from s2s.tasks.summarization.rouge import require_rouge

        require_rouge()


def check_model_builds(config: Config) -> None:
    """Build the recipe's model once on the meta device (no memory, no data; a tiny
    vocabulary stands in for the tokeniser's), so every cell is constructed with the
    recipe's options at the sizes training will use: a cell that rejects them, or a
    layout that does not fit (dot attention between unequal widths), is a ConfigError now.
    A cell that cannot be built on the meta device is left to the real build."""
    import torch

    from s2s.core.cell_registry import cell_factory

    model = config.model
    make_cell = cell_factory(model.cell, model.cell_options)
    vocab = 16
    try:
        with torch.device("meta"):
            if config.task.type == "language_model":
                from s2s.tasks.language_model.model import LanguageModel

                LanguageModel(model, make_cell, vocab)
            else:
                from s2s.core.seq2seq import Seq2Seq
                from s2s.data.tokenizer import PAD_ID

                joint = config.tokenizer.joint or config.task.type == "speech"
                Seq2Seq(model, make_cell, vocab, vocab, PAD_ID, share_vocab=joint)
    except (RuntimeError, NotImplementedError):
        pass


def make_trainer(config: Config, run: RunDir, quiet: bool = False):
    """The trainer for the recipe's task, ready to ``train()``."""
    target = TRAINERS.get(config.task.type)
    if target is None:
        raise S2SError(f"task.type = {config.task.type!r} has no trainer in this version of s2s")
    module_name, _, class_name = target.partition(":")
    trainer_class = getattr(importlib.import_module(module_name), class_name)
    return trainer_class(config, run, quiet=quiet)
