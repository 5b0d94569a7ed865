"""Constraints on what search may output, as a decoder around another (`s2s.core.decoding`),
so greedy search, beam search and sampling all obey them:

- a forced prefix per input: the first tokens of every hypothesis are given (scored by the
  model as if it had chosen them), as fairseq's ``--prefix-size`` and OpenNMT-py's
  target prefix do;
- ``no_repeat_ngram_size`` n: no n-gram occurs twice in a hypothesis (fairseq's and Hugging
  Face's option of that name);
- a minimum length per input: EOS is not allowed before it.

The constraint state (what each hypothesis has output, its prefix and minimum) lives beside
the wrapped decoder's state in the hypothesis tree, so search reorders it with the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.core.decoding import Decoder, SearchState
from s2s.data.tokenizer import EOS_ID, PAD_ID


@dataclass(frozen=True)
class Constraints:
    """What one batch's outputs must respect; ``prefixes`` and ``min_lengths`` have one
    entry per input row (an empty prefix and 0 mean none)."""

    prefixes: Sequence[Sequence[int]] | None = None
    no_repeat_ngram_size: int = 0
    min_lengths: Sequence[int] | None = None

    def active(self) -> bool:
        """Whether any constraint applies (else search runs on the bare decoder)."""
        prefixed = self.prefixes is not None and any(self.prefixes)
        floored = self.min_lengths is not None and any(self.min_lengths)
        return prefixed or floored or self.no_repeat_ngram_size > 0


def forbid_repeats(log_probs: Tensor, history: Tensor, n: int) -> Tensor:
    """``log_probs`` [N, V] with -inf for every token that would complete an n-gram already
    in its row of ``history`` [N, t] (the tokens output so far)."""
    steps = history.size(1)
    if n <= 0 or steps < n:  # no complete n-gram yet: nothing can repeat
        return log_probs
    if n == 1:
        banned = torch.zeros_like(log_probs, dtype=torch.long)
        banned.scatter_add_(1, history, torch.ones_like(history))
        return log_probs.masked_fill(banned > 0, float("-inf"))
    windows = history.unfold(1, n, 1)  # N x (t - n + 1) x n: every n-gram so far
    last = history[:, steps - n + 1 :]  # N x (n - 1): what the next token would extend
    match = (windows[:, :, :-1] == last.unsqueeze(1)).all(dim=-1)  # N x W
    counts = torch.zeros_like(log_probs, dtype=torch.long)
    counts.scatter_add_(1, windows[:, :, -1], match.long())
    return log_probs.masked_fill(counts > 0, float("-inf"))


def force_prefix(log_probs: Tensor, prefix: Tensor, prefix_lengths: Tensor, t: int) -> Tensor:
    """Rows still inside their prefix (``t`` < length) may only take its token ``t``, at
    the model's log-probability for it."""
    inside = prefix_lengths > t
    if t >= prefix.size(1) or not bool(inside.any()):
        return log_probs
    wanted = prefix[:, t].clamp(min=0).unsqueeze(1)
    kept = log_probs.gather(1, wanted)
    forced = torch.full_like(log_probs, float("-inf")).scatter(1, wanted, kept)
    return torch.where(inside.unsqueeze(1), forced, log_probs)


class ConstrainedDecoder:
    """``decoder`` whose step log-probabilities obey ``constraints`` (one entry per input
    row of the batch ``start`` receives)."""

    def __init__(self, decoder: Decoder, constraints: Constraints) -> None:
        self.decoder, self.constraints = decoder, constraints
        self.scores_chosen_rows = decoder.scores_chosen_rows

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        inner = self.decoder.start(src, src_lengths)
        batch, device = src.size(0), src.device
        prefixes = self.constraints.prefixes or [[] for _ in range(batch)]
        width = max((len(p) for p in prefixes), default=0)
        prefix = torch.full((batch, width), PAD_ID, dtype=torch.long, device=device)
        for row, tokens in enumerate(prefixes):
            prefix[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in prefixes], dtype=torch.long, device=device)
        floors = self.constraints.min_lengths or [0] * batch
        minimum = torch.tensor(list(floors), dtype=torch.long, device=device)
        history = torch.empty((batch, 0), dtype=torch.long, device=device)
        return SearchState((inner.hypotheses, (history, prefix, lengths, minimum)), inner.sentences)

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        inner_hypotheses, (history, prefix, lengths, minimum) = state.hypotheses
        # history: BOS, then every token output so far (the first step's tokens are BOS)
        history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
        log_probs, inner = self.decoder.step(
            tokens, SearchState(inner_hypotheses, state.sentences), rows
        )
        chosen = (lambda x: x) if rows is None else (lambda x: x.index_select(0, rows))
        outputs = chosen(history)[:, 1:]
        t = outputs.size(1)
        log_probs = forbid_repeats(log_probs, outputs, self.constraints.no_repeat_ngram_size)
        early = torch.zeros_like(log_probs, dtype=torch.bool)
        early[:, EOS_ID] = chosen(minimum) > t
        log_probs = log_probs.masked_fill(early, float("-inf"))
        log_probs = force_prefix(log_probs, chosen(prefix), chosen(lengths), t)
        constraint_state = (history, prefix, lengths, minimum)
        return log_probs, SearchState((inner.hypotheses, constraint_state), inner.sentences)
