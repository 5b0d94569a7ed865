"""Validation scores of a model: per-token loss, perplexity, and greedy decoding scored by
the task's metric.

Training and `s2s average` both call these, so a checkpoint's logged scores and the scores
of an averaged checkpoint are computed the same way and can be compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate, token_batches
from s2s.data.corpus import TokenizedSplit
from s2s.data.tokenizer import PAD_ID


@torch.inference_mode()
def corpus_loss(
    model: Seq2Seq,
    data: TokenizedSplit,
    max_tokens: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[float, int]:
    """Mean per-token cross-entropy (no label smoothing) over a split, and its token count."""
    model.eval()
    lengths_src = [len(s) + 1 for s in data.src]
    lengths_tgt = [len(t) + 1 for t in data.tgt]
    total, tokens = 0.0, 0
    budget = max(max_tokens, max(lengths_src), max(lengths_tgt))
    for indices in token_batches(lengths_src, lengths_tgt, budget):
        batch = collate(indices, data.src, data.tgt).to(device)
        with autocast():
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                batch.tgt_out.reshape(-1),
                ignore_index=PAD_ID,
                reduction="sum",
            )
        )
        tokens += batch.num_tgt_tokens
    return total / max(tokens, 1), tokens


def loss_scores(loss: float, perplexity: bool = True) -> dict[str, float]:
    """``valid_loss`` and ``valid_ppl`` of a mean per-token loss, rounded as the metrics log
    rounds them (so a checkpoint scored again compares equal to its record). Without
    ``perplexity`` the loss alone: the exponential of a loss over real numbers (a
    forecaster's negative log density) is no perplexity."""
    scores = {"valid_loss": round(loss, 4)}
    if perplexity:
        scores["valid_ppl"] = round(math.exp(min(loss, 50.0)), 3)
    return scores


class GreedyDecoder(Protocol):
    """A task's decoder as validation uses it: greedy output text per source."""

    def greedy(self, sources: Sequence[Any]) -> list[str]: ...


def greedy_scores(
    decoder: GreedyDecoder,
    sources: Sequence[Any],
    score: Callable[[list[str]], dict[str, float]],
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, float]:
    """Decode ``sources`` greedily (under ``autocast``) and ``score`` the outputs: what
    training logs at each validation and `s2s average` reports, for every task."""
    with autocast():
        hypotheses = decoder.greedy(sources)
    return score(hypotheses)
