"""Which trainer serves each `task.type`; imported lazily so one task's dependencies
(audio libraries, say) never load for another."""

from __future__ import annotations

import importlib

from s2s.config import Config
from s2s.errors import S2SError
from s2s.run_dir import RunDir

# task.type -> "module:Class" of its Trainer subclass.
TRAINERS = {
    "translation": "s2s.training:Trainer",
    "summarization": "s2s.summarization:SummarizationTrainer",
    "language_model": "s2s.lm_training:LanguageModelTrainer",
    "speech": "s2s.speech_training:SpeechTrainer",
}


def make_trainer(config: Config, run: RunDir, quiet: bool = False):
    """The trainer for the recipe's task, ready to ``train()``."""
    target = TRAINERS.get(config.task.type)
    if target is None:
        raise S2SError(f"task.type = {config.task.type!r} has no trainer in this version of s2s")
    module_name, _, class_name = target.partition(":")
    trainer_class = getattr(importlib.import_module(module_name), class_name)
    return trainer_class(config, run, quiet=quiet)
