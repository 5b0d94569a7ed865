"""Summarisation: translation's model, data and search, scored by ROUGE."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from s2s.tasks.translation.task import TranslationTask

if TYPE_CHECKING:
    from s2s.config import Config
    from s2s.data.corpus import ParallelText
    from s2s.scores import Score


class SummarizationTask(TranslationTask):
    """Validates by greedy ROUGE-1/2/L F1 (ROUGE-L first) and evaluates by ROUGE, taking
    the best of several references where a split has them."""

    name: ClassVar[str] = "summarization"
    metrics: ClassVar[tuple[str, ...]] = ("rouge_l", "loss")

    def check_extras(self, config: Config) -> None:
        if config.train.valid_decode:
            from s2s.tasks.summarization.rouge import require_rouge

            require_rouge()

    def validation_scores(self, hypotheses: list[str], text: ParallelText) -> dict[str, float]:
        from s2s.tasks.summarization.rouge import rouge_log_scores

        return rouge_log_scores(hypotheses, text.all_references())

    def corpus_scores(self, hypotheses: list[str], text: ParallelText) -> list[Score]:
        from s2s.tasks.summarization.rouge import rouge_scores

        return rouge_scores(hypotheses, text.all_references())
