"""Corpus metrics through sacrebleu, with signatures so scores can be compared."""

from __future__ import annotations

from s2s.scores import Score


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


def _jiwer():
    try:
        import jiwer
    except ImportError:
        from s2s.errors import S2SError

        raise S2SError("WER and CER need jiwer: pip install 's2s[speech]'") from None
    return jiwer


def speech_scores(hypotheses: list[str], references: list[str]) -> list[Score]:
    """Corpus WER and CER (jiwer: edits over reference words / characters) and the share
    of transcripts exactly right, all in percent, as `s2s evaluate` prints them."""
    from importlib.metadata import version

    jiwer = _jiwer()
    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    signature = f"jiwer:{version('jiwer')}|case:kept|punctuation:kept"
    scores = []
    for name, result, unit in (("WER", words, "words"), ("CER", chars, "characters")):
        edits = result.substitutions + result.deletions + result.insertions
        total = result.hits + result.substitutions + result.deletions
        rate = 100 * (result.wer if name == "WER" else result.cer)
        text = f"{name} = {rate:.2f} % ({edits} edits / {total} reference {unit})"
        scores.append(Score(name, rate, signature, text))
    exact = sum(h.split() == r.split() for h, r in zip(hypotheses, references, strict=True))
    share = 100 * exact / max(len(references), 1)
    text = f"accuracy = {share:.2f} % ({exact} of {len(references)} transcripts exactly right)"
    scores.append(Score("accuracy", share, "exact transcript, spaces collapsed", text))
    return scores
