"""Corpus metrics of text outputs against one or several references per input: BLEU and chrF
through sacrebleu (with signatures, so scores can be compared), and WER, CER and exact match
through jiwer, each against the closest reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from s2s.errors import S2SError
from s2s.scores import Score

# The metrics a text-to-text run may validate and early-stop by (besides "loss"), as their
# metrics-log keys: valid_bleu, valid_chrf, valid_wer, valid_cer, valid_exact.
TEXT_METRICS = ("bleu", "chrf", "wer", "cer", "exact")


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists as sacrebleu's streams (one stream per reference
    position); an example with fewer references than the most has None there, which
    sacrebleu skips."""
    width = max((len(refs) for refs in references), default=1)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu_and_chrf(hypotheses: list[str], references: Sequence[Sequence[str]]) -> list[Score]:
    """Detokenised, cased BLEU (13a) and chrF of hypotheses against every reference of each."""
    from sacrebleu.metrics import BLEU, CHRF

    streams = reference_streams(references)
    scores = []
    for metric in (BLEU(), CHRF()):
        result = metric.corpus_score(hypotheses, streams)
        scores.append(
            Score(result.name, result.score, str(metric.get_signature()), result.format())
        )
    return scores


def _jiwer():
    try:
        import jiwer
    except ImportError:
        raise S2SError("WER and CER need jiwer: pip install jiwer") from None
    return jiwer


@dataclass
class _Errors:
    """Summed edits and reference lengths of one unit (words or characters)."""

    edits: int = 0
    length: int = 0

    def rate(self) -> float:
        """Edits per reference unit, in percent; an empty reference side counts every
        output unit as an error (100 % per unit), so an all-empty corpus is 0 or 100."""
        if self.length == 0:
            return 100.0 if self.edits else 0.0
        return 100 * self.edits / self.length


def _closest(hypothesis: str, references: Sequence[str], measure: Callable) -> tuple[int, int]:
    """(edits, reference length) against the reference with the fewest edits (the shorter
    reference on a tie, as its rate is then the higher: no reference is picked to flatter)."""
    return min((measure(r, hypothesis) for r in references), key=lambda pair: (pair[0], pair[1]))


def _word_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    words = reference.split()
    if not words:
        return len(hypothesis.split()), 0
    result = _jiwer().process_words(reference, hypothesis)
    return result.substitutions + result.deletions + result.insertions, len(words)


def _char_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    reference, hypothesis = reference.strip(), hypothesis.strip()
    if not reference:
        return len(hypothesis), 0
    result = _jiwer().process_characters(reference, hypothesis)
    return result.substitutions + result.deletions + result.insertions, len(reference)


def error_rates(
    hypotheses: list[str], references: Sequence[Sequence[str]], exact_name: str = "exact"
) -> list[Score]:
    """Corpus WER and CER (edits over reference words / characters, each example scored
    against its closest reference) and the share of outputs equal to some reference with
    spaces collapsed, all in percent, as `s2s evaluate` prints them."""
    from importlib.metadata import version

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    words, chars, exact = _Errors(), _Errors(), 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        for total, measure in ((words, _word_edits), (chars, _char_edits)):
            edits, length = _closest(hypothesis, refs, measure)
            total.edits += edits
            total.length += length
        exact += any(hypothesis.split() == r.split() for r in refs)
    _jiwer()
    signature = f"jiwer:{version('jiwer')}|case:kept|punctuation:kept"
    if any(len(refs) > 1 for refs in references):
        signature += "|refs:closest"
    scores = []
    for name, total, unit in (("WER", words, "words"), ("CER", chars, "characters")):
        rate = total.rate()
        text = f"{name} = {rate:.2f} % ({total.edits} edits / {total.length} reference {unit})"
        scores.append(Score(name, rate, signature, text))
    share = 100 * exact / max(len(references), 1)
    what = "transcripts" if exact_name == "accuracy" else "outputs"
    text = f"{exact_name} = {share:.2f} % ({exact} of {len(references)} {what} exactly right)"
    scores.append(Score(exact_name, share, "exact match, spaces collapsed", text))
    return scores


def text_scores(hypotheses: list[str], references: Sequence[Sequence[str]]) -> list[Score]:
    """What `s2s evaluate` reports for a translation run: BLEU, chrF, WER, CER, exact."""
    return bleu_and_chrf(hypotheses, references) + error_rates(hypotheses, references)


def metric_value(metric: str, hypotheses: list[str], references: Sequence[Sequence[str]]) -> float:
    """One of TEXT_METRICS, for the validation log."""
    if metric == "bleu":
        from sacrebleu.metrics import BLEU

        return BLEU().corpus_score(hypotheses, reference_streams(references)).score
    if metric == "chrf":
        return bleu_and_chrf(hypotheses, references)[1].score
    by_name = {s.name.lower(): s.score for s in error_rates(hypotheses, references)}
    return by_name[metric]


def speech_scores(hypotheses: list[str], references: list[str]) -> list[Score]:
    """WER, CER and exact-transcript accuracy of transcripts, one reference each."""
    scores = error_rates(hypotheses, [[r] for r in references], exact_name="accuracy")
    scores[2].signature = "exact transcript, spaces collapsed"
    return scores
