"""Corpus metrics through sacrebleu, with signatures so scores can be compared."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Score:
    name: str
    score: float
    signature: str
    text: str  # sacrebleu's own one-line rendering


def bleu_and_chrf(hypotheses: list[str], references: list[str]) -> list[Score]:
    """Detokenised, cased BLEU (13a) and chrF of hypotheses against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    scores = []
    for metric in (BLEU(), CHRF()):
        result = metric.corpus_score(hypotheses, [references])
        scores.append(
            Score(result.name, result.score, str(metric.get_signature()), result.format())
        )
    return scores


def bleu(hypotheses: list[str], references: list[str]) -> float:
    from sacrebleu.metrics import BLEU

    return BLEU().corpus_score(hypotheses, [references]).score
