"""A language model in search's decoder-step protocol (`s2s.core.decoding`), so greedy
search, beam search and sampling all continue prompts.

The "source" is a batch of prompts (token ids, padded, with their lengths). `start` reads
each prompt in one pass and keeps the distribution after its last token; the first `step`
returns that and reads no token (search feeds BOS there, which a language model never
reads), every later step feeds the token search chose.
"""

from __future__ import annotations

import torch
from torch import Tensor

from s2s.core.decoding import SearchState
from s2s.data.tokenizer import UNK_ID
from s2s.tasks.language_model.model import LanguageModel


class LanguageModelDecoder:
    """Continues prompts with ``model``; ``<unk>``, which is not text, is never chosen."""

    scores_chosen_rows = False

    def __init__(self, model: LanguageModel) -> None:
        self.model = model

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        """Prompts [B, P] (padded) of ``src_lengths`` [B] tokens, at least one each -> per
        hypothesis: the layer states after the prompt and the next-token log-probs."""
        model = self.model
        lengths = src_lengths.to(src.device)
        padded = bool((lengths != src.size(1)).any())
        embedded = model.dropout(model.embed(src))
        h, states = model.stack(embedded, lengths=lengths if padded else None, return_states=True)
        logits = model._logits(h)  # B x P x V
        rows = torch.arange(src.size(0), device=src.device)
        last = logits[rows, lengths - 1].float()
        return SearchState((states, self._log_probs(last)))

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        """tokens [N] -> (log-probs [N, V], state); the first step returns the prompt's."""
        states, pending = state.hypotheses
        if pending is not None:
            return pending, SearchState((states, None))
        logits, states = self.model.step(tokens, states)
        return self._log_probs(logits), SearchState((states, None))

    @staticmethod
    def _log_probs(logits: Tensor) -> Tensor:
        """Log-probabilities [N, V] of next-token logits [N, V], ``<unk>`` excluded."""
        logits[:, UNK_ID] = float("-inf")
        return logits.log_softmax(dim=-1)
