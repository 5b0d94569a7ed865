"""Summarisation: the translation trainer with ROUGE in place of BLEU at validation.

Data, model (with or without `model.copy`), batching and loss are the text-to-text ones;
only the decoded-validation metric differs (`SummarizationTask.validation_scores`), so
early stopping can follow ROUGE-L (`train.early_stopping_metric = "rouge_l"`).
"""

from __future__ import annotations

from s2s.tasks.summarization.rouge import require_rouge
from s2s.tasks.translation.trainer import TranslationTrainer


class SummarizationTrainer(TranslationTrainer):
    """Validates by summarising `valid` greedily and scoring ROUGE-1/2/L F1."""

    def _after_model(self) -> None:
        if self.config.train.valid_decode:
            require_rouge()
        super()._after_model()
