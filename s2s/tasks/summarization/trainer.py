"""Summarisation: the translation trainer with ROUGE in place of BLEU at validation.

Data, model (with or without `model.copy`), batching and loss are the text-to-text ones;
only the decoded-validation metric differs, so early stopping can follow ROUGE-L
(`train.early_stopping_metric = "rouge_l"`).
"""

from __future__ import annotations

from s2s.tasks.summarization.rouge import require_rouge, rouge
from s2s.train.trainer import Trainer

# ROUGE names -> metrics-log keys; ROUGE-L first, as the task metric `s2s info` shows
LOG_KEYS = {"ROUGE-L": "valid_rouge_l", "ROUGE-1": "valid_rouge_1", "ROUGE-2": "valid_rouge_2"}


class SummarizationTrainer(Trainer):
    """Validates by summarising `valid` greedily and scoring ROUGE-1/2/L F1."""

    def _after_model(self) -> None:
        if self.config.train.valid_decode:
            require_rouge()
        super()._after_model()

    def _decoded_scores(self) -> dict[str, float]:
        with self.autocast():
            hyps = self.translator.search_ids(self.valid_data.src, beam_size=1)
        text = [self.tokenizers.tgt.decode(h[0].tokens if h else []) for h in hyps]
        return rouge_log_scores(text, self.valid_data.raw.all_references())


def rouge_log_scores(summaries: list[str], references: list[list[str]]) -> dict[str, float]:
    """ROUGE-1/2/L F1 under their metrics-log keys, rounded as the log rounds them."""
    scores = rouge(summaries, references)
    return {key: round(scores[name], 2) for name, key in LOG_KEYS.items()}
