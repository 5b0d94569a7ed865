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
