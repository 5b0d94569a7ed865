"""Greedy and batched beam search over any model with the decoder-step protocol.

The protocol (fairseq-style) keeps search ignorant of the model's insides:
``encode(src, src_lengths)``, ``initial_state(encoded)`` and
``decode_step(prev_tokens, state, encoded) -> (log_probs, state, attention)``, where
every state is a nested tuple of batch-first tensors that `reorder` can gather.

Each sentence has its own length limit (``max_lengths``) and finishes on its own, so a
sentence gets the same output alone or in a batch of any size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from s2s.config import DecodeConfig, Stopping
from s2s.core.seq2seq import reorder
from s2s.data.batching import Batch
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


class StepModel(Protocol):
    """A model may also set ``beams_share_encoder_rows``: its decode_step then takes the
    encoder output with one row per sentence for the k consecutive rows of the sentence's
    beams, and beam search keeps it that way instead of copying it k times. A model that
    sets ``scores_chosen_rows`` takes ``rows`` (indices) as decode_step's fourth argument
    and returns log-probabilities for those rows only: beam search then skips its finished
    hypotheses."""

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


def _compact(keep: Tensor, *values):
    """Rows ``keep`` of each value (tensors or nested decoder state), for dropping the
    rows of finished sentences so later steps compute only what is still running."""
    return tuple(reorder(v, keep) for v in values)


@torch.inference_mode()
def greedy_search(
    model: StepModel, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
) -> list[Hypothesis]:
    """Pick the most probable token at every step, for all sentences at once; a sentence
    leaves the batch when it ends, so the steps after that cost nothing for it."""
    encoded = model.encode(src, src_lengths)
    state = model.initial_state(encoded)
    batch = src.size(0)
    device = src.device
    limit = max_lengths.to(device)
    steps = int(limit.max()) + 1
    history = torch.full((batch, steps), PAD_ID, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    alive = torch.arange(batch, device=device)  # sentences still decoding, as batch rows
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for t in range(steps):
        log_probs, state, _ = model.decode_step(prev, state, encoded)
        best, token = log_probs.max(dim=-1)
        at_limit = t >= limit  # a sentence at its length limit may only end
        token = token.masked_fill(at_limit, EOS_ID)
        best = torch.where(at_limit, log_probs[:, EOS_ID], best)
        history[alive, t] = token
        scores[alive] += best
        ended = token == EOS_ID
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, token, limit, state, encoded = _compact(
                keep, alive, token, limit, state, encoded
            )
        prev = token
    return [
        Hypothesis(_strip(row), float(s))
        for row, s in zip(history.tolist(), scores.tolist(), strict=True)
    ]


# Rows at least this wide are searched for their top k through `STRIPS` column strips.
STRIPED_TOP_K_MIN_WIDTH = 1024
STRIPS = 8


def top_k_rows(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each row's k largest values, best first, and their columns: `torch.topk` along the
    last dimension (where values tie, the columns it names may differ).

    On the CPU torch.topk over a whole vocabulary is slow: 1.3 ms for 260 x 8 000 on this
    project's 2-core machine, more than the log_softmax before it. Here column j belongs
    to group j mod G of a row cut into 8 strips of G columns: a group holding one of the k
    best has a maximum no smaller than the k-th best, so the k groups with the largest
    maxima hold them all: one strided max over the row, then a top-k over the 8 x k
    columns of those groups, 0.6 ms.
    """
    rows, width = values.shape
    groups = width // STRIPS
    if width < STRIPED_TOP_K_MIN_WIDTH or groups < k:
        return values.topk(k, dim=-1)
    striped = groups * STRIPS
    group_max = values[:, :striped].view(rows, STRIPS, groups).amax(dim=1)  # rows x G
    best_groups = group_max.topk(k, dim=-1).indices  # rows x k
    offsets = torch.arange(0, striped, groups, device=values.device)  # the 8 strips
    columns = (best_groups.unsqueeze(-1) + offsets).view(rows, k * STRIPS)
    if striped < width:  # the last width mod 8 columns are candidates as they are
        tail = torch.arange(striped, width, device=values.device).expand(rows, -1)
        columns = torch.cat([columns, tail], dim=1)
    top, where = values.gather(1, columns).topk(k, dim=-1)
    return top, columns.gather(1, where)


def _spread(rows: Tensor, count: int, *values: Tensor) -> tuple[Tensor, ...]:
    """``values`` of the given ``rows`` placed in tensors of ``count`` rows (zeros elsewhere:
    those rows are finished, and their PAD continuation replaces them)."""
    return tuple(
        value.new_zeros(count, *value.shape[1:]).index_copy_(0, rows, value) for value in values
    )


def _only(token: int, width: int, log_prob: Tensor) -> tuple[Tensor, Tensor]:
    """Candidates [N, width] of rows that may continue with ``token`` alone, at ``log_prob``
    [N]: the other slots are -inf, so they are never chosen."""
    values = log_prob.new_full((log_prob.size(0), width), float("-inf"))
    values[:, 0] = log_prob
    tokens = torch.full_like(values, token, dtype=torch.long)
    return values, tokens


@torch.inference_mode()
def beam_search(
    model: StepModel,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    beam_size: int,
    alpha: float = 1.0,
    nbest: int = 1,
    stopping: Stopping = "exact",
) -> list[list[Hypothesis]]:
    """Batched beam search: every sentence and beam advances in one decoder call per step.

    Finished hypotheses stay in the beam, extended only by PAD at no cost, and candidates
    are ranked by length-normalised score, so a finished hypothesis is displaced only by a
    better one. A sentence is done when all its beams are finished, or when its n best
    are and no running beam can still overtake them (`_settled`); its rows then leave
    the batch. With ``stopping="early"`` it is done as soon as its n best are finished
    (`_leading`), as OpenNMT-py and Joey NMT stop: fewer steps, and with ``alpha`` above 0
    a longer hypothesis that would have overtaken is sometimes missed.

    The length penalty is the same for every continuation of a row, so a row's best
    continuations are its ``beam_size`` most probable tokens: each step ranks those
    (B x K x K candidates) rather than the whole vocabulary of every row.
    """
    batch, k = src.size(0), beam_size
    device = src.device
    encoded = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=device).repeat_interleave(k)
    state = reorder(model.initial_state(encoded), expand)
    by_sentence = getattr(model, "beams_share_encoder_rows", False)
    if not by_sentence:
        encoded = reorder(encoded, expand)
    limit = max_lengths.to(device).repeat_interleave(k)  # B*K

    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # at the start only the first beam is alive
    scores = scores.view(-1)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    history = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)
    sentences = torch.arange(batch, device=device)  # original index of each running sentence
    beam_offsets = torch.arange(k, device=device)
    if stopping not in STOPPING_RULES:
        raise ValueError(f"beam_search: stopping={stopping!r}: use one of {list(STOPPING_RULES)}")
    is_done = STOPPING_RULES[stopping]
    skips_finished = getattr(model, "scores_chosen_rows", False)
    any_finished = False  # read with the step's other flag: one host sync per step
    done: dict[int, tuple[list[list[int]], list[float]]] = {}

    for t in range(int(limit.max()) + 1):
        if skips_finished and any_finished:
            # a finished row only takes PAD: score the running rows alone
            alive = (~finished).nonzero().squeeze(1)
            log_probs, state, _ = model.decode_step(history[:, -1], state, encoded, alive)
            width = min(k, log_probs.size(-1))
            top_lp, top_tok = _spread(alive, finished.numel(), *top_k_rows(log_probs, width))
            (eos,) = _spread(alive, finished.numel(), log_probs[:, EOS_ID])
        else:
            log_probs, state, _ = model.decode_step(history[:, -1], state, encoded)
            width = min(k, log_probs.size(-1))
            top_lp, top_tok = top_k_rows(log_probs, width)  # N x W
            eos = log_probs[:, EOS_ID]
        eos_lp, eos_tok = _only(EOS_ID, width, eos)
        at_limit = ((t >= limit) & ~finished).unsqueeze(1)
        top_lp, top_tok = top_lp.where(~at_limit, eos_lp), top_tok.where(~at_limit, eos_tok)
        pad_lp, pad_tok = _only(PAD_ID, width, torch.zeros_like(scores))
        ended = finished.unsqueeze(1)
        top_lp, top_tok = top_lp.where(~ended, pad_lp), top_tok.where(~ended, pad_tok)

        running = sentences.numel()
        candidates = (scores.unsqueeze(1) + top_lp).view(running, k * width)
        new_lengths = lengths + (~finished).long()
        penalty = length_penalty(new_lengths, alpha).repeat_interleave(width)
        normalised = candidates / penalty.view(running, k * width)
        ranked, flat = normalised.topk(k, dim=1)  # running x K, best first
        rows = (torch.arange(running, device=device).unsqueeze(1) * k + flat // width).view(-1)
        tokens = top_tok.view(running, k * width).gather(1, flat).view(-1)

        scores = candidates.gather(1, flat).view(-1)
        lengths = new_lengths[rows]
        finished = finished[rows] | (tokens == EOS_ID)
        history = torch.cat([history[rows], tokens.unsqueeze(1)], dim=1)
        state = reorder(state, rows)

        reachable = (scores / length_penalty(limit + 1, alpha)).view(running, k)
        complete = is_done(finished.view(running, k), ranked, reachable, min(nbest, k))
        # any_finished may count rows compaction drops below: then every row is scored
        any_complete, any_finished = torch.stack([complete.any(), finished.any()]).tolist()
        if any_complete:
            _collect(done, complete, sentences, history, ranked, k, nbest)
            keep = (~complete).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            keep_rows = (keep.unsqueeze(1) * k + beam_offsets).view(-1)
            sentences = sentences[keep]
            scores, lengths, finished, history, limit, state = _compact(
                keep_rows, scores, lengths, finished, history, limit, state
            )
            encoded = reorder(encoded, keep if by_sentence else keep_rows)
    # Every row is finished by the last step (at its limit a row may only end).
    return [_hypotheses(*done[sentence]) for sentence in range(batch)]


def _settled(finished: Tensor, ranked: Tensor, reachable: Tensor, nbest: int) -> Tensor:
    """Sentences whose n-best can no longer change, given each beam's state [running, K]
    best first: every beam is finished, or the first ``nbest`` are and no running beam can
    overtake the last of them. A running beam's final score is its score so far plus
    log-probabilities (none above 0) over a length penalty that grows with length (alpha is
    at least 0), so it is at most ``reachable``, its score so far over the penalty at its
    length limit.
    Stopping there returns exactly what running every beam to its end would."""
    best_running = reachable.masked_fill(finished, float("-inf")).amax(dim=1)
    top_finished = finished[:, :nbest].all(dim=1)
    return finished.all(dim=1) | (top_finished & (ranked[:, nbest - 1] >= best_running))


def _leading(finished: Tensor, ranked: Tensor, reachable: Tensor, nbest: int) -> Tensor:
    """Sentences whose first ``nbest`` beams (best first, by length-normalised score at
    their current lengths) are finished, as `_settled` takes them: no running beam scores
    better now, though one may once longer. With ``alpha`` 0 this is `_settled`'s answer,
    since raw log-probabilities only fall."""
    return finished[:, :nbest].all(dim=1)


STOPPING_RULES = {"exact": _settled, "early": _leading}  # decode.stopping -> when a sentence ends


def _collect(
    done: dict[int, tuple[list[list[int]], list[float]]],
    complete: Tensor,
    sentences: Tensor,
    history: Tensor,
    ranked: Tensor,
    k: int,
    nbest: int,
) -> None:
    """Store the n-best token rows and scores of the sentences marked ``complete``."""
    keep = min(nbest, k)
    for position in complete.nonzero().squeeze(1).tolist():
        rows = history[position * k : position * k + keep, 1:].tolist()
        done[int(sentences[position])] = (rows, ranked[position, :keep].tolist())


def _hypotheses(rows: list[list[int]], scores: list[float]) -> list[Hypothesis]:
    return [
        Hypothesis(_strip(tokens), score)
        for tokens, score in zip(rows, scores, strict=True)
        if score != float("-inf")
    ]


def batch_budget(batch_tokens: int, beam_size: int, longest: int) -> int:
    """Source tokens (or frames) per decoding batch: ``batch_tokens`` for greedy search. A
    beam of k carries k hypotheses per sentence, so its batches hold 2 / (k + 1) of that
    (2 000 of 6 000 for a beam of 5): on the CPU, beam-5 decoding of Multi30k was fastest
    there and about 15 % slower with 6 000 (docs/performance-log.md). Never below ``longest``,
    the longest source, which must fit in a batch."""
    return max(batch_tokens * 2 // (beam_size + 1), longest)


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
    return beam_search(
        model, src, src_lengths, limits, beam_size, decode.length_penalty, nbest, decode.stopping
    )


def search_batches(
    model: StepModel,
    batches: Iterable[list[int]],
    make_batch: Callable[[list[int]], Batch],
    decode: DecodeConfig,
    device: torch.device,
    beam_size: int,
    nbest: int = 1,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> Iterator[tuple[Batch, list[list[Hypothesis]]]]:
    """Search batch after batch of example indices: ``make_batch`` builds each on the CPU,
    it moves to ``device`` and is searched under ``autocast`` (decode.amp's precision).
    Yields each batch with its rows' n-best lists, for the caller to put in input order."""
    for indices in batches:
        batch = make_batch(indices).to(device)
        with autocast():
            found = search_batch(model, batch.src, batch.src_lengths, decode, beam_size, nbest)
        yield batch, found
