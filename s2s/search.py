"""Greedy and batched beam search over any model with the decoder-step protocol.

The protocol (fairseq-style) keeps search ignorant of the model's insides:
``encode(src, src_lengths)``, ``initial_state(encoded)`` and
``decode_step(prev_tokens, state, encoded) -> (log_probs, state, attention)``, where
every state is a nested tuple of batch-first tensors that `reorder` can gather.

Each sentence has its own length limit (``max_lengths``) and finishes on its own, so a
sentence gets the same output alone or in a batch of any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from s2s.config import DecodeConfig
from s2s.model import reorder
from s2s.tokenizer import BOS_ID, EOS_ID, PAD_ID


class StepModel(Protocol):
    def encode(self, src: Tensor, src_lengths: Tensor) -> Any: ...
    def initial_state(self, encoded: Any) -> Any: ...
    def decode_step(self, prev_tokens: Tensor, state: Any, encoded: Any): ...


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # sum of log-probabilities (EOS included) / length penalty


def max_output_lengths(src_lengths: Tensor, ratio: float, offset: int) -> Tensor:
    """Per-sentence limit on output tokens (EOS not counted): ratio * source length + offset."""
    return (src_lengths.float() * ratio).floor().long() + offset


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); 1 when alpha = 0."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def _strip(tokens: list[int]) -> list[int]:
    """Cut at the first EOS and drop padding."""
    out = []
    for token in tokens:
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out


@torch.inference_mode()
def greedy_search(
    model: StepModel, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
) -> list[Hypothesis]:
    """Pick the most probable token at every step, for all sentences at once."""
    encoded = model.encode(src, src_lengths)
    state = model.initial_state(encoded)
    batch = src.size(0)
    device = src.device
    max_lengths = max_lengths.to(device)
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    scores = torch.zeros(batch, device=device)
    steps: list[Tensor] = []
    for t in range(int(max_lengths.max()) + 1):
        log_probs, state, _ = model.decode_step(prev, state, encoded)
        log_probs = log_probs.clone()
        log_probs[t >= max_lengths, :EOS_ID] = float("-inf")
        log_probs[t >= max_lengths, EOS_ID + 1 :] = float("-inf")
        best, token = log_probs.max(dim=-1)
        token = token.masked_fill(finished, PAD_ID)
        scores += best.masked_fill(finished, 0.0)
        steps.append(token)
        finished |= token == EOS_ID
        prev = token
        if bool(finished.all()):
            break
    history = torch.stack(steps, dim=1).tolist()
    return [
        Hypothesis(_strip(row), float(s)) for row, s in zip(history, scores.tolist(), strict=True)
    ]


@torch.inference_mode()
def beam_search(
    model: StepModel,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    beam_size: int,
    alpha: float = 1.0,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Batched beam search: every sentence and beam advances in one decoder call per step.

    Finished hypotheses stay in the beam, extended only by PAD at no cost, and candidates
    are ranked by length-normalised score, so a finished hypothesis is displaced only by a
    better one. A sentence is done when all its beams are finished.
    """
    batch, k = src.size(0), beam_size
    device = src.device
    encoded = model.encode(src, src_lengths)
    state = model.initial_state(encoded)
    expand = torch.arange(batch, device=device).repeat_interleave(k)
    encoded, state = reorder(encoded, expand), reorder(state, expand)
    limit = max_lengths.to(device).repeat_interleave(k)  # B*K

    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # at the start only the first beam is alive
    scores = scores.view(-1)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    history = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)
    row_base = (torch.arange(batch, device=device) * k).unsqueeze(1)  # B x 1
    ranked = scores.view(batch, k)

    for t in range(int(limit.max()) + 1):
        log_probs, state, _ = model.decode_step(history[:, -1], state, encoded)
        vocab = log_probs.size(-1)
        log_probs = log_probs.clone()
        at_limit = (t >= limit) & ~finished
        log_probs[at_limit, :EOS_ID] = float("-inf")
        log_probs[at_limit, EOS_ID + 1 :] = float("-inf")
        log_probs[finished] = float("-inf")
        log_probs[finished, PAD_ID] = 0.0

        candidates = scores.unsqueeze(1) + log_probs  # B*K x V
        new_lengths = lengths + (~finished).long()
        normalised = candidates / length_penalty(new_lengths, alpha).unsqueeze(1)
        ranked, flat = normalised.view(batch, k * vocab).topk(k, dim=1)  # B x K
        rows = (row_base + flat // vocab).view(-1)
        tokens = (flat % vocab).view(-1)

        scores = candidates.view(batch, k * vocab).gather(1, flat).view(-1)
        lengths = new_lengths[rows]
        finished = finished[rows] | (tokens == EOS_ID)
        history = torch.cat([history[rows], tokens.unsqueeze(1)], dim=1)
        state = reorder(state, rows)
        if bool(finished.all()):
            break

    tokens_per_row = history[:, 1:].tolist()
    ranked_scores = ranked.tolist()
    results = []
    for sentence in range(batch):
        hyps = []
        for beam in range(min(nbest, k)):
            score = ranked_scores[sentence][beam]
            if score == float("-inf"):
                continue
            hyps.append(Hypothesis(_strip(tokens_per_row[sentence * k + beam]), score))
        results.append(hyps)
    return results


def search_batch(
    model: StepModel,
    src: Tensor,
    src_lengths: Tensor,
    decode: DecodeConfig,
    beam_size: int,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """The n-best of each row of a batch: greedy search for a beam of 1, else beam search;
    output lengths are limited by ``decode``'s ratio and offset to the source length."""
    limits = max_output_lengths(src_lengths, decode.max_length_ratio, decode.max_length_offset)
    if beam_size == 1:
        return [[h] for h in greedy_search(model, src, src_lengths, limits)]
    return beam_search(model, src, src_lengths, limits, beam_size, decode.length_penalty, nbest)
