"""A score as every task reports it: for `s2s evaluate`, the model card and the
evaluations log, so it sits below them all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Score:
    name: str
    score: float
    signature: str
    text: str  # the metric's own one-line rendering (sacrebleu's, for BLEU and chrF)


# Validation metrics (the names after ``valid_`` in metrics.jsonl) where a smaller value is
# better; every other metric is better larger. One list for the trainer's best checkpoint,
# `s2s average` and the plots' "best" marker.
LOWER_IS_BETTER = frozenset({"loss", "ppl", "wer", "cer", "mase", "smape", "crps"})


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is better; takes ``wer`` or its log key ``valid_wer``."""
    return metric.removeprefix("valid_") in LOWER_IS_BETTER
