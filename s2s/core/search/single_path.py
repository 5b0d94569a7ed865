"""Greedy search and sampling: one hypothesis per sentence, one token chosen per step.

The two differ only in how a token is chosen from a step's log-probabilities, so they share
`decode_one_path`; a sentence leaves the batch when it ends, so the steps after that cost
nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.core.decoding import Decoder, keep_sentences
from s2s.core.search.hypothesis import Hypothesis, strip_tokens
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

Chooser = Callable[[Tensor], Tensor]  # log-probs [N, V] -> one token per row [N]


def most_probable(log_probs: Tensor) -> Tensor:
    """The greedy choice: each row's most probable token."""
    return log_probs.max(dim=-1).indices


def decode_one_path(
    decoder: Decoder, src: Tensor, src_lengths: Tensor, max_lengths: Tensor, choose: Chooser
) -> list[Hypothesis]:
    """One hypothesis per sentence, its token at every step picked by ``choose``; scored by
    the model's log-probabilities of the chosen tokens (EOS included)."""
    state = decoder.start(src, src_lengths)
    batch, device = src.size(0), src.device
    limit = max_lengths.to(device)
    steps = int(limit.max()) + 1
    history = torch.full((batch, steps), PAD_ID, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    alive = torch.arange(batch, device=device)  # sentences still decoding, as batch rows
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for t in range(steps):
        log_probs, state = decoder.step(prev, state)
        token = choose(log_probs)
        at_limit = t >= limit  # a sentence at its length limit may only end
        token = token.masked_fill(at_limit, EOS_ID)
        history[alive, t] = token
        scores[alive] += log_probs.gather(1, token.unsqueeze(1)).squeeze(1)
        ended = token == EOS_ID
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, token, limit = alive[keep], token[keep], limit[keep]
            state = keep_sentences(state, keep, keep)
        prev = token
    return [
        Hypothesis(strip_tokens(row), float(s))
        for row, s in zip(history.tolist(), scores.tolist(), strict=True)
    ]


@dataclass(frozen=True)
class GreedySearch:
    """The most probable token at every step, for all sentences at once."""

    @torch.inference_mode()
    def search(
        self, decoder: Decoder, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
    ) -> list[list[Hypothesis]]:
        """Each sentence's one-element n-best list."""
        found = decode_one_path(decoder, src, src_lengths, max_lengths, most_probable)
        return [[hypothesis] for hypothesis in found]
