"""Batched beam search, built from small pieces that are each tested alone (as Sockeye's):

- `top_k_rows`: each hypothesis's best continuations from the vocabulary;
- `restrict_candidates` (finishing): at its length limit a hypothesis may only end (EOS),
  and a finished one is only extended by PAD at no cost;
- `candidate_scores` and `normalised_scores` with `length_penalty`: the score of every
  candidate, raw and length-normalised;
- `select_candidates`: the k best candidates of each sentence;
- `settled` / `leading` (the stopping rules) and `collect_nbest` (finishing): which
  sentences are done, and their n-best lists;
- `compact`: dropping done sentences from the batch, so later steps compute only what is
  still running;
- `join_beams` (with `s2s.core.decoding.join_states`): sentences joining a running search.

Every sentence and beam advances in one decoder call per step, and the decoder's state
follows its hypotheses by a gather (`s2s.core.decoding`). `RunningBeams` is the loop: a
batch's search is every sentence joining at once and stepping until none runs; `s2s serve`
lets sentences join between steps (continuous batching).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.config import Stopping
from s2s.core.decoding import (
    Decoder,
    SearchState,
    join_states,
    keep_sentences,
    select_hypotheses,
)
from s2s.core.search.hypothesis import Hypothesis, strip_tokens
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

NBest = tuple[list[list[int]], list[float]]  # one sentence's token rows and scores

# Rows at least this wide are searched for their top k through `STRIPS` column strips.
STRIPED_TOP_K_MIN_WIDTH = 1024
STRIPS = 8


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); 1 when alpha = 0."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


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


@dataclass
class Candidates:
    """Each hypothesis's best continuations [N, W] and its EOS log-probability [N]."""

    log_probs: Tensor
    tokens: Tensor
    eos: Tensor


def scored_continuations(
    decoder: Decoder, state: SearchState, prev: Tensor, finished: Tensor, width: int, skip: bool
) -> tuple[Candidates, SearchState]:
    """One decoder step and each row's ``width`` best continuations. With ``skip`` only the
    running rows are scored (the decoder declares ``scores_chosen_rows``): a finished row
    only takes PAD, and the output layer is the largest part of a step."""
    if not skip:
        log_probs, state = decoder.step(prev, state)
        width = min(width, log_probs.size(-1))
        top_lp, top_tok = top_k_rows(log_probs, width)  # N x W
        return Candidates(top_lp, top_tok, log_probs[:, EOS_ID]), state
    alive = (~finished).nonzero().squeeze(1)
    log_probs, state = decoder.step(prev, state, alive)
    width = min(width, log_probs.size(-1))
    top_lp, top_tok = _spread(alive, finished.numel(), *top_k_rows(log_probs, width))
    (eos,) = _spread(alive, finished.numel(), log_probs[:, EOS_ID])
    return Candidates(top_lp, top_tok, eos), state


def restrict_candidates(
    candidates: Candidates, finished: Tensor, at_limit: Tensor
) -> tuple[Tensor, Tensor]:
    """Finishing, per row: at its length limit (``at_limit`` [N]) a running hypothesis may
    only end with EOS; a finished one continues with PAD alone, at log-probability 0, so it
    stays in the beam and is displaced only by a better hypothesis."""
    width = candidates.log_probs.size(1)
    eos_lp, eos_tok = _only(EOS_ID, width, candidates.eos)
    limited = (at_limit & ~finished).unsqueeze(1)
    top_lp = candidates.log_probs.where(~limited, eos_lp)
    top_tok = candidates.tokens.where(~limited, eos_tok)
    pad_lp, pad_tok = _only(PAD_ID, width, torch.zeros_like(candidates.eos))
    ended = finished.unsqueeze(1)
    return top_lp.where(~ended, pad_lp), top_tok.where(~ended, pad_tok)


def candidate_scores(scores: Tensor, log_probs: Tensor, sentences: int) -> Tensor:
    """Candidate scoring: each row's score [N] plus its continuations' log-probabilities
    [N, W], as [sentences, k * W] (a sentence's k beams side by side)."""
    return (scores.unsqueeze(1) + log_probs).view(sentences, -1)


def normalised_scores(candidates: Tensor, lengths: Tensor, alpha: float, width: int) -> Tensor:
    """Length normalisation: candidates [S, k * W] over the length penalty of their rows'
    new lengths [S * k] (`length_penalty`)."""
    penalty = length_penalty(lengths, alpha).repeat_interleave(width)
    return candidates / penalty.view(candidates.shape)


def select_candidates(normalised: Tensor, k: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k selection among each sentence's k * W candidates [S, k * W]: their normalised
    scores [S, k] best first, their columns [S, k], and the hypothesis rows [S * k] that
    they extend (the new beams, in order)."""
    ranked, flat = normalised.topk(k, dim=1)
    sentences = torch.arange(normalised.size(0), device=normalised.device).unsqueeze(1)
    rows = (sentences * k + flat // width).view(-1)
    return ranked, flat, rows


def settled(finished: Tensor, ranked: Tensor, reachable: Tensor, nbest: int) -> Tensor:
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


def leading(finished: Tensor, ranked: Tensor, reachable: Tensor, nbest: int) -> Tensor:
    """Sentences whose first ``nbest`` beams (best first, by length-normalised score at
    their current lengths) are finished, as `settled` takes them: no running beam scores
    better now, though one may once longer. With ``alpha`` 0 this is `settled`'s answer,
    since raw log-probabilities only fall."""
    return finished[:, :nbest].all(dim=1)


STOPPING_RULES = {"exact": settled, "early": leading}  # decode.stopping -> when a sentence ends


@dataclass
class Beams:
    """The running hypotheses: k consecutive rows per running sentence. A row's own tokens
    are the last ``steps`` of its history: rows that joined later are padded on the left."""

    scores: Tensor  # N: sum of log-probabilities
    lengths: Tensor  # N: tokens, EOS included
    finished: Tensor  # N: ended with EOS
    history: Tensor  # N x (widest row's steps + 1), BOS before each row's tokens
    limit: Tensor  # N: output length limit
    sentences: Tensor  # S = N / k: each running sentence's number in the search
    steps: Tensor  # N: steps taken since the row's sentence joined

    @classmethod
    def start(cls, max_lengths: Tensor, k: int, numbers: Tensor) -> Beams:
        """k beams per sentence, only the first alive: the others start at -inf."""
        batch, device = max_lengths.size(0), max_lengths.device
        scores = torch.zeros(batch, k, device=device)
        scores[:, 1:] = float("-inf")
        return cls(
            scores.view(-1),
            torch.zeros(batch * k, dtype=torch.long, device=device),
            torch.zeros(batch * k, dtype=torch.bool, device=device),
            torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device),
            max_lengths.repeat_interleave(k),
            numbers.to(device),
            torch.zeros(batch * k, dtype=torch.long, device=device),
        )

    def extend(self, rows: Tensor, tokens: Tensor, scores: Tensor, lengths: Tensor) -> Beams:
        """The beams that extend hypothesis ``rows`` by ``tokens``, with their new raw scores
        and their rows' new ``lengths`` (indexed by ``rows`` here)."""
        return Beams(
            scores,
            lengths[rows],
            self.finished[rows] | (tokens == EOS_ID),
            torch.cat([self.history[rows], tokens.unsqueeze(1)], dim=1),
            self.limit,
            self.sentences,
            self.steps + 1,
        )


def compact(beams: Beams, state: SearchState, keep: Tensor, k: int) -> tuple[Beams, SearchState]:
    """Compaction: only the running sentences at positions ``keep`` and their k beams."""
    rows = (keep.unsqueeze(1) * k + torch.arange(k, device=keep.device)).view(-1)
    kept = Beams(
        beams.scores.index_select(0, rows),
        beams.lengths.index_select(0, rows),
        beams.finished.index_select(0, rows),
        beams.history.index_select(0, rows),
        beams.limit.index_select(0, rows),
        beams.sentences[keep],
        beams.steps.index_select(0, rows),
    )
    return kept, keep_sentences(state, keep, rows)


def join_beams(running: Beams, joining: Beams) -> Beams:
    """The rows of ``running`` then those of ``joining``; histories are cut to the columns
    a running row still reads and the narrower side is padded on the left with PAD."""
    history = running.history[:, -(int(running.steps.max()) + 1) :]
    width = max(history.size(1), joining.history.size(1))

    def widened(rows: Tensor) -> Tensor:
        return torch.nn.functional.pad(rows, (width - rows.size(1), 0), value=PAD_ID)

    return Beams(
        torch.cat([running.scores, joining.scores]),
        torch.cat([running.lengths, joining.lengths]),
        torch.cat([running.finished, joining.finished]),
        torch.cat([widened(history), widened(joining.history)]),
        torch.cat([running.limit, joining.limit]),
        torch.cat([running.sentences, joining.sentences]),
        torch.cat([running.steps, joining.steps]),
    )


def collect_nbest(
    done: dict[int, NBest], complete: Tensor, beams: Beams, ranked: Tensor, nbest: int
) -> None:
    """Store the n-best token rows and scores of the running sentences marked ``complete``
    [S] under their numbers (beams are best first)."""
    k = ranked.size(1)
    keep = min(nbest, k)
    positions = complete.nonzero().squeeze(1)
    steps = beams.steps[positions * k].tolist()
    for position, taken in zip(positions.tolist(), steps, strict=True):
        rows = beams.history[position * k : position * k + keep, -taken:].tolist()
        done[int(beams.sentences[position])] = (rows, ranked[position, :keep].tolist())


def hypotheses(rows: list[list[int]], scores: list[float]) -> list[Hypothesis]:
    """An n-best list; beams that never got a finite score (fewer than k) are left out."""
    return [
        Hypothesis(strip_tokens(tokens), score)
        for tokens, score in zip(rows, scores, strict=True)
        if score != float("-inf")
    ]


@dataclass(frozen=True)
class BeamSearch:
    """Keep the ``beam_size`` best hypotheses of each sentence at every step; return its
    ``nbest`` finished ones, ranked by score over the length penalty of exponent ``alpha``.

    A sentence is done when all its beams are finished, or when its n best are and no
    running beam can still overtake them (``stopping="exact"``, `settled`); its rows then
    leave the batch. With ``stopping="early"`` it is done as soon as its n best are
    finished (`leading`), as OpenNMT-py and Joey NMT stop: fewer steps, and with ``alpha``
    above 0 a longer hypothesis that would have overtaken is sometimes missed.

    The length penalty is the same for every continuation of a row, so a row's best
    continuations are its ``beam_size`` most probable tokens: each step ranks those
    (S x k x k candidates) rather than the whole vocabulary of every row.
    """

    beam_size: int
    alpha: float = 1.0
    nbest: int = 1
    stopping: Stopping = "exact"

    def __post_init__(self) -> None:
        if self.stopping not in STOPPING_RULES:
            raise ValueError(
                f"beam_search: stopping={self.stopping!r}: use one of {list(STOPPING_RULES)}"
            )

    @torch.inference_mode()
    def search(
        self, decoder: Decoder, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
    ) -> list[list[Hypothesis]]:
        """Each sentence's n-best list, best first."""
        running = RunningBeams(self, decoder)
        running.join(src, src_lengths, max_lengths, range(src.size(0)))
        done: dict[Hashable, list[Hypothesis]] = {}
        while running.sentences:
            done.update(running.step())
        return [done[sentence] for sentence in range(src.size(0))]

    def advance(
        self, decoder: Decoder, state: SearchState, beams: Beams, skip: bool
    ) -> tuple[Beams, SearchState, Tensor]:
        """One step: every beam's candidates, scored and ranked; the k best of each
        sentence become its beams. Returns them, the state following them, and their
        normalised scores [S, k] best first."""
        k = self.beam_size
        found, state = scored_continuations(
            decoder, state, beams.history[:, -1], beams.finished, k, skip
        )
        width = found.log_probs.size(1)
        top_lp, top_tok = restrict_candidates(found, beams.finished, beams.steps >= beams.limit)
        candidates = candidate_scores(beams.scores, top_lp, beams.sentences.numel())
        new_lengths = beams.lengths + (~beams.finished).long()
        normalised = normalised_scores(candidates, new_lengths, self.alpha, width)
        ranked, flat, rows = select_candidates(normalised, k, width)
        tokens = top_tok.view(flat.size(0), -1).gather(1, flat).view(-1)
        scores = candidates.gather(1, flat).view(-1)
        return (
            beams.extend(rows, tokens, scores, new_lengths),
            select_hypotheses(state, rows),
            ranked,
        )

    def done_sentences(self, beams: Beams, ranked: Tensor) -> Tensor:
        """The running sentences [S] whose n-best the stopping rule takes as final."""
        running, k = ranked.shape
        reachable = (beams.scores / length_penalty(beams.limit + 1, self.alpha)).view(running, k)
        is_done = STOPPING_RULES[self.stopping]
        return is_done(beams.finished.view(running, k), ranked, reachable, min(self.nbest, k))


class RunningBeams:
    """A beam search that sentences join between steps and leave as soon as their n-best
    lists are final: what continuous batching in `s2s serve` needs, since a client whose
    sentence is done can send the next one while the others are still searched. A batch's
    search (`BeamSearch.search`) is every sentence joining at once.

    A sentence's search is the same whenever it joins: its limit counts its own steps, and
    nothing in a step mixes rows of different sentences (as a batch's search already is
    the same as each sentence's alone, up to floating-point order)."""

    def __init__(self, search: BeamSearch, decoder: Decoder) -> None:
        self.search, self.decoder = search, decoder
        self.beams: Beams | None = None
        self.state: SearchState | None = None
        self.keys: dict[int, Hashable] = {}  # each running sentence's number -> its key
        self.numbered = 0
        self.any_finished = False  # read with the step's other flag: one host sync per step

    @property
    def sentences(self) -> int:
        """How many sentences are running."""
        return len(self.keys)

    @torch.inference_mode()
    def join(
        self, src: Tensor, src_lengths: Tensor, max_lengths: Tensor, keys: Iterable[Hashable]
    ) -> None:
        """Start the search of a batch of sources, each under its key (one per row), at the
        next step."""
        k, batch = self.search.beam_size, src.size(0)
        state = self.decoder.start(src, src_lengths)
        state = select_hypotheses(
            state, torch.arange(batch, device=src.device).repeat_interleave(k)
        )
        numbers = torch.arange(self.numbered, self.numbered + batch)
        beams = Beams.start(max_lengths.to(src.device), k, numbers)
        self.keys.update(zip(numbers.tolist(), keys, strict=True))
        self.numbered += batch
        if self.beams is None or self.state is None:
            self.beams, self.state = beams, state
        else:
            self.beams = join_beams(self.beams, beams)
            self.state = join_states(self.state, state)

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, list[Hypothesis]]]:
        """One step of every running sentence; the keys and n-best lists of those it ends."""
        if self.beams is None or self.state is None:
            return []
        search, k = self.search, self.search.beam_size
        skip = self.decoder.scores_chosen_rows and self.any_finished
        beams, state, ranked = search.advance(self.decoder, self.state, self.beams, skip)
        complete = search.done_sentences(beams, ranked)
        # any_finished may count rows compaction drops below: then every row is scored
        any_complete, self.any_finished = torch.stack(
            [complete.any(), beams.finished.any()]
        ).tolist()
        done: dict[int, NBest] = {}
        if any_complete:
            collect_nbest(done, complete, beams, ranked, search.nbest)
            keep = (~complete).nonzero().squeeze(1)
            if keep.numel() == 0:
                beams = state = None
            else:
                beams, state = compact(beams, state, keep, k)
        self.beams, self.state = beams, state
        return [(self.keys.pop(number), hypotheses(*found)) for number, found in done.items()]
