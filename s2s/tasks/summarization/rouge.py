"""ROUGE-1/2/L F1 through Google's `rouge-score` package, Porter stemming on.

Several references per document (SciTLDR) are scored the way SciTLDR scores them: each
metric takes its maximum over the document's references, then the mean over documents.
With one reference each this is plain corpus-mean ROUGE F1.
"""

from __future__ import annotations

from collections.abc import Sequence

from s2s.errors import S2SError
from s2s.scores import Score

# rouge-score's metric names -> the names s2s reports and logs
METRICS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}

# ROUGE names -> metrics-log keys; ROUGE-L first, as the task metric `s2s info` shows
LOG_KEYS = {"ROUGE-L": "valid_rouge_l", "ROUGE-1": "valid_rouge_1", "ROUGE-2": "valid_rouge_2"}


def rouge_log_scores(summaries: list[str], references: list[list[str]]) -> dict[str, float]:
    """ROUGE-1/2/L F1 under their metrics-log keys, rounded as the log rounds them."""
    scores = rouge(summaries, references)
    return {key: round(scores[name], 2) for name, key in LOG_KEYS.items()}


def require_rouge() -> None:
    """Fail now, in one line naming the extra, rather than at the first validation."""
    _scorer()


def _scorer():
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise S2SError(
            "ROUGE needs the rouge-score package: pip install 's2s[summarization]'"
        ) from None
    return rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)


def rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean over documents of the best F1 over each document's references, x 100, keyed
    'ROUGE-1', 'ROUGE-2', 'ROUGE-L'. Every document needs at least one reference."""
    if len(hypotheses) != len(references):
        raise S2SError(f"{len(hypotheses)} summaries but {len(references)} reference sets")
    scorer = _scorer()
    totals = dict.fromkeys(METRICS, 0.0)
    for number, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True), 1):
        if not refs:
            raise S2SError(f"document {number} has no reference summary")
        results = [scorer.score(ref, hypothesis) for ref in refs]
        for key in METRICS:
            totals[key] += max(result[key].fmeasure for result in results)
    count = max(len(hypotheses), 1)
    return {name: 100.0 * totals[key] / count for key, name in METRICS.items()}


def rouge_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[Score]:
    """ROUGE-1/2/L as `Score`s for `s2s evaluate` and the model card."""
    from importlib.metadata import version

    most = max((len(r) for r in references), default=1)
    refs = "1 ref" if most == 1 else f"max over up to {most} refs"
    signature = f"rouge-score {version('rouge-score')}|F1|stemmer|{refs}"
    return [
        Score(name, value, signature, f"{name} = {value:.2f}")
        for name, value in rouge(hypotheses, references).items()
    ]
