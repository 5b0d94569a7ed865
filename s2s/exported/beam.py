"""Batched beam search in numpy: `s2s.core.search.beam.BeamSearch` piece for piece
(finishing, candidate scores, length normalisation, top-k, the stopping rules, n-best,
compaction), without its skipping of finished rows, which changes only the cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from s2s.exported.decoder import NumpyState
from s2s.exported.search import Hypothesis, NBest, StepDecoder, length_penalty, strip_tokens, top_k


@dataclass
class Beams:
    """The running hypotheses: k consecutive rows per running sentence."""

    scores: np.ndarray  # N float32: sum of log-probabilities
    lengths: np.ndarray  # N: tokens, EOS included
    finished: np.ndarray  # N bool: ended with EOS
    history: np.ndarray  # N x steps so far + 1, BOS first
    limit: np.ndarray  # N: output length limit
    sentences: np.ndarray  # S: each running sentence's index in the batch

    @classmethod
    def start(cls, limits: np.ndarray, k: int) -> Beams:
        batch = limits.shape[0]
        scores = np.zeros((batch, k), dtype=np.float32)
        scores[:, 1:] = -np.inf
        return cls(
            scores.reshape(-1),
            np.zeros(batch * k, dtype=np.int64),
            np.zeros(batch * k, dtype=bool),
            np.full((batch * k, 1), BOS_ID, dtype=np.int64),
            np.repeat(limits, k),
            np.arange(batch),
        )

    def take(self, rows: np.ndarray, sentences: np.ndarray) -> Beams:
        """Only hypothesis ``rows`` of the running ``sentences`` (compaction)."""
        return Beams(
            self.scores[rows],
            self.lengths[rows],
            self.finished[rows],
            self.history[rows],
            self.limit[rows],
            self.sentences[sentences],
        )


def only(token: int, width: int, log_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates [N, width] that continue with ``token`` alone, at ``log_prob`` [N]."""
    values = np.full((log_prob.shape[0], width), -np.inf, dtype=np.float32)
    values[:, 0] = log_prob
    return values, np.full(values.shape, token, dtype=np.int64)


def restrict_candidates(
    top_lp: np.ndarray, top_tok: np.ndarray, eos: np.ndarray, beams: Beams, t: int
) -> tuple[np.ndarray, np.ndarray]:
    """At its length limit a running hypothesis may only end; a finished one takes PAD at 0."""
    width = top_lp.shape[1]
    eos_lp, eos_tok = only(EOS_ID, width, eos)
    limited = ((t >= beams.limit) & ~beams.finished)[:, None]
    top_lp, top_tok = np.where(limited, eos_lp, top_lp), np.where(limited, eos_tok, top_tok)
    pad_lp, pad_tok = only(PAD_ID, width, np.zeros_like(eos))
    ended = beams.finished[:, None]
    return np.where(ended, pad_lp, top_lp), np.where(ended, pad_tok, top_tok)


def settled(
    finished: np.ndarray, ranked: np.ndarray, reachable: np.ndarray, nbest: int
) -> np.ndarray:
    """Every beam finished, or the n best are and no running beam can overtake them."""
    best_running = np.where(finished, -np.inf, reachable).max(axis=1)
    top_finished = finished[:, :nbest].all(axis=1)
    return finished.all(axis=1) | (top_finished & (ranked[:, nbest - 1] >= best_running))


def leading(
    finished: np.ndarray, ranked: np.ndarray, reachable: np.ndarray, nbest: int
) -> np.ndarray:
    """The first n beams are finished (decode.stopping = "early")."""
    return finished[:, :nbest].all(axis=1)


STOPPING_RULES = {"exact": settled, "early": leading}


@dataclass(frozen=True)
class NumpyBeamSearch:
    """`s2s.core.search.BeamSearch` in numpy: ``beam_size`` beams per sentence, ``nbest``
    finished ones returned, ranked over the length penalty of exponent ``alpha``."""

    beam_size: int
    alpha: float = 1.0
    nbest: int = 1
    stopping: str = "exact"

    def search(
        self, decoder: StepDecoder, src: np.ndarray, src_lengths: np.ndarray, limits: np.ndarray
    ) -> list[list[Hypothesis]]:
        """Each sentence's n-best list, best first."""
        k, batch = self.beam_size, src.shape[0]
        state = decoder.start(src, src_lengths).select_hypotheses(np.repeat(np.arange(batch), k))
        beams = Beams.start(limits, k)
        done: dict[int, NBest] = {}
        for t in range(int(limits.max()) + 1):
            beams, state, ranked = self.advance(decoder, state, beams, t)
            complete = self.done_sentences(beams, ranked)
            if complete.any():
                self.collect(done, complete, beams, ranked)
                keep = np.flatnonzero(~complete)
                if keep.size == 0:
                    break
                rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
                beams, state = beams.take(rows, keep), state.keep_sentences(keep, rows)
        return [hypotheses(*done[sentence]) for sentence in range(batch)]

    def advance(
        self, decoder: StepDecoder, state: NumpyState, beams: Beams, t: int
    ) -> tuple[Beams, NumpyState, np.ndarray]:
        """Step t: every beam's k best continuations, scored; the k best of each sentence
        become its beams (with their state), and their normalised scores [S, k]."""
        k, running = self.beam_size, beams.sentences.size
        log_probs, state = decoder.step(beams.history[:, -1], state)
        width = min(k, log_probs.shape[1])
        top_lp, top_tok = top_k(log_probs, width)
        top_lp, top_tok = restrict_candidates(top_lp, top_tok, log_probs[:, EOS_ID], beams, t)
        candidates = (beams.scores[:, None] + top_lp).reshape(running, -1)
        new_lengths = beams.lengths + (~beams.finished)
        penalty = np.repeat(length_penalty(new_lengths, self.alpha), width)
        normalised = candidates / penalty.reshape(candidates.shape)
        ranked, flat = top_k(normalised, k)
        rows = (np.arange(running)[:, None] * k + flat // width).reshape(-1)
        tokens = np.take_along_axis(top_tok.reshape(running, -1), flat, 1).reshape(-1)
        extended = Beams(
            np.take_along_axis(candidates, flat, 1).reshape(-1),
            new_lengths[rows],
            beams.finished[rows] | (tokens == EOS_ID),
            np.concatenate([beams.history[rows], tokens[:, None]], axis=1),
            beams.limit,
            beams.sentences,
        )
        return extended, state.select_hypotheses(rows), ranked

    def done_sentences(self, beams: Beams, ranked: np.ndarray) -> np.ndarray:
        """The running sentences [S] whose n-best the stopping rule takes as final."""
        running, k = ranked.shape
        reachable = (beams.scores / length_penalty(beams.limit + 1, self.alpha)).reshape(running, k)
        rule = STOPPING_RULES[self.stopping]
        return rule(beams.finished.reshape(running, k), ranked, reachable, min(self.nbest, k))

    def collect(
        self, done: dict[int, NBest], complete: np.ndarray, beams: Beams, ranked: np.ndarray
    ) -> None:
        """The n-best token rows and scores of the sentences marked ``complete``."""
        k = ranked.shape[1]
        keep = min(self.nbest, k)
        for position in np.flatnonzero(complete).tolist():
            rows = beams.history[position * k : position * k + keep, 1:].tolist()
            done[int(beams.sentences[position])] = (rows, ranked[position, :keep].tolist())


def hypotheses(rows: list[list[int]], scores: list[float]) -> list[Hypothesis]:
    """An n-best list; beams that never got a finite score are left out."""
    return [
        Hypothesis(strip_tokens(tokens), score)
        for tokens, score in zip(rows, scores, strict=True)
        if score != float("-inf")
    ]
