"""Translation: text to text, validated by greedy BLEU (or chrF, WER, CER, exact match),
evaluated by all five."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from s2s.tasks.task import EvaluationRequest, Task

if TYPE_CHECKING:
    from pathlib import Path

    from s2s.data.corpus import ParallelText
    from s2s.run.directory import RunDir
    from s2s.scores import Score
    from s2s.train.trainer import Trainer


class TranslationTask(Task):
    """An attention encoder-decoder over text; the tasks that decode text into text
    (summarisation) subclass it and change its scores."""

    name: ClassVar[str] = "translation"
    # BLEU first (the default); wer/cer/exact suit symbol sequences (transliteration, spelling,
    # pronunciation), whose users judge whole-sequence correctness
    metrics: ClassVar[tuple[str, ...]] = ("bleu", "chrf", "wer", "cer", "exact", "loss")
    supports_ddp: ClassVar[bool] = True
    decode_command: ClassVar[str] = "translate"

    def trainer_class(self) -> type[Trainer]:
        from s2s.tasks.translation.trainer import TranslationTrainer

        return TranslationTrainer

    def validation_scores(self, hypotheses: list[str], text: ParallelText) -> dict[str, float]:
        """The scores of greedy validation outputs under their metrics-log keys, rounded
        as the log rounds them (BLEU against every reference; a subclass scores its own)."""
        from s2s.tasks.translation.metrics import metric_value

        return {"valid_bleu": round(metric_value("bleu", hypotheses, text.all_references()), 2)}

    def decoded_scores(
        self, hypotheses: list[str], text: ParallelText, metric: str
    ) -> dict[str, float]:
        """What validation logs: `validation_scores`, led by the early-stopping ``metric``
        when that is a text metric they lack (chrF, WER, CER or exact match beside BLEU)."""
        from s2s.tasks.translation.metrics import TEXT_METRICS, metric_value

        scores = self.validation_scores(hypotheses, text)
        if f"valid_{metric}" in scores or metric not in TEXT_METRICS:
            return scores
        value = metric_value(metric, hypotheses, text.all_references())
        return {f"valid_{metric}": round(value, 2), **scores}

    def corpus_scores(self, hypotheses: list[str], text: ParallelText) -> list[Score]:
        """The scores `s2s evaluate` reports for ``hypotheses`` of ``text``'s sources:
        BLEU, chrF, WER, CER and exact match, against every reference a split has."""
        from s2s.tasks.translation.metrics import text_scores

        return text_scores(hypotheses, text.all_references())

    def evaluate(self, run_dir: Path, request: EvaluationRequest) -> list[Score]:
        from s2s.tasks.translation.evaluation import evaluate_text_run

        return evaluate_text_run(self, run_dir, request)

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        from s2s.tasks.translation.evaluation import score_text_checkpoint

        return score_text_checkpoint(self, run, checkpoint, device)
