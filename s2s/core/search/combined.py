"""Decoders that combine other decoders behind the same step protocol (`s2s.core.decoding`),
so greedy search, beam search and sampling drive them unchanged:

- `EnsembleDecoder`: several models of one vocabulary, their next-token distributions
  averaged at every step (the average of probabilities, as fairseq's ensembles do; in log
  space, log-mean-exp of the members' log-probabilities);
- `FusionDecoder`: shallow fusion (Gulcehre et al. 2015), a model's log-probabilities plus
  ``weight`` times a language model's, for a language model of the same target vocabulary.

A combined state holds each member's state side by side (a tuple per tree), so search
reorders all of them with its one gather.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from s2s.core.decoding import Decoder, SearchState


def _split(state: SearchState, count: int) -> list[SearchState]:
    """The members' states inside a combined one."""
    sentences = state.sentences if state.sentences is not None else (None,) * count
    return [SearchState(h, s) for h, s in zip(state.hypotheses, sentences, strict=True)]


def _join(states: Sequence[SearchState]) -> SearchState:
    """One combined state of the members' ``states``."""
    return SearchState(tuple(s.hypotheses for s in states), tuple(s.sentences for s in states))


class EnsembleDecoder:
    """The members' next-token distributions averaged at each step; every member reads the
    same source ids, so they must share the source and target vocabularies (the caller
    checks; the vocabulary sizes are checked here at the first step)."""

    def __init__(self, members: Sequence[Decoder]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = list(members)
        self.scores_chosen_rows = all(m.scores_chosen_rows for m in self.members)

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        return _join([m.start(src, src_lengths) for m in self.members])

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        steps = [
            m.step(tokens, s, rows)
            for m, s in zip(self.members, _split(state, len(self.members)), strict=True)
        ]
        log_probs = [lp for lp, _ in steps]
        sizes = {lp.size(-1) for lp in log_probs}
        if len(sizes) > 1:
            raise ValueError(f"ensemble members have different vocabularies: sizes {sorted(sizes)}")
        if len(log_probs) == 1:
            averaged = log_probs[0]
        else:
            averaged = torch.stack(log_probs).logsumexp(dim=0) - math.log(len(log_probs))
        return averaged, _join([s for _, s in steps])


class FusionDecoder:
    """``model``'s log-probabilities plus ``weight`` times ``language_model``'s, whose state
    starts from ``lm_start`` (its prompt: the EOS a line follows in its training stream)
    for every input. Scores are then no longer log-probabilities of the model alone; beam
    search ranks by them, and the n-best scores are the fused ones."""

    def __init__(
        self, model: Decoder, language_model: Decoder, weight: float, lm_start: int
    ) -> None:
        self.model, self.language_model = model, language_model
        self.weight, self.lm_start = weight, lm_start
        self.scores_chosen_rows = model.scores_chosen_rows and language_model.scores_chosen_rows

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        prompts = torch.full((src.size(0), 1), self.lm_start, dtype=torch.long, device=src.device)
        ones = torch.ones(src.size(0), dtype=torch.long, device=src.device)
        return _join([self.model.start(src, src_lengths), self.language_model.start(prompts, ones)])

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        model_state, lm_state = _split(state, 2)
        log_probs, model_state = self.model.step(tokens, model_state, rows)
        lm_log_probs, lm_state = self.language_model.step(tokens, lm_state, rows)
        if lm_log_probs.size(-1) != log_probs.size(-1):
            raise ValueError(
                f"the language model's vocabulary ({lm_log_probs.size(-1)}) is not the "
                f"model's target vocabulary ({log_probs.size(-1)})"
            )
        if not self.weight:  # 0 * -inf (a token the language model never gives) is nan
            return log_probs, _join([model_state, lm_state])
        return log_probs + self.weight * lm_log_probs, _join([model_state, lm_state])
