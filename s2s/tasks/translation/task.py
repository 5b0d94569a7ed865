"""Translation: text to text, validated by greedy BLEU, evaluated by BLEU and chrF."""

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
    metrics: ClassVar[tuple[str, ...]] = ("bleu", "loss")
    supports_ddp: ClassVar[bool] = True
    decode_command: ClassVar[str] = "translate"

    def trainer_class(self) -> type[Trainer]:
        from s2s.tasks.translation.trainer import TranslationTrainer

        return TranslationTrainer

    def validation_scores(self, hypotheses: list[str], text: ParallelText) -> dict[str, float]:
        """The scores of greedy validation outputs under their metrics-log keys, rounded
        as the log rounds them."""
        from s2s.tasks.translation.metrics import bleu

        return {"valid_bleu": round(bleu(hypotheses, text.tgt), 2)}

    def corpus_scores(self, hypotheses: list[str], text: ParallelText) -> list[Score]:
        """The scores `s2s evaluate` reports for ``hypotheses`` of ``text``'s sources."""
        from s2s.tasks.translation.metrics import bleu_and_chrf

        return bleu_and_chrf(hypotheses, text.tgt)

    def evaluate(self, run_dir: Path, request: EvaluationRequest) -> list[Score]:
        from s2s.tasks.translation.evaluation import evaluate_text_run

        return evaluate_text_run(self, run_dir, request)

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        from s2s.tasks.translation.evaluation import score_text_checkpoint

        return score_text_checkpoint(self, run, checkpoint, device)
