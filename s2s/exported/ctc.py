"""Joint CTC/attention decoding in numpy: `s2s.tasks.speech.ctc_prefix.JointCTCDecoder`
step for step (its docstrings say why each rule is as it is), over an exported recogniser.

At every step each candidate token's attention log-probability is mixed with its CTC prefix
score, log P_ctc(prefix + token) - log P_ctc(prefix), from the encoder's CTC
log-probabilities by the prefix forward algorithm; EOS gets the probability that CTC has
emitted the whole prefix by the last frame. The state keeps, per hypothesis, the forward
variables of the prefix extended by each scored candidate; the next step takes the row of
the token the search appended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from s2s.exported.decoder import NumpyState

CTC_BLANK = PAD_ID  # as s2s.tasks.speech.model: padding is never a target
# Vocabularies up to this size are CTC-scored in full at every step, larger ones only for
# the attention decoder's PRE_BEAM best tokens (s2s.tasks.speech.ctc_prefix)
FULL_SCORING_LIMIT = 128
PRE_BEAM = 40


class SpeechStepDecoder(Protocol):
    """What joint decoding wraps: `s2s.exported.recognizer.SpeechDecoder`."""

    def encode(
        self, features: np.ndarray, lengths: np.ndarray
    ) -> tuple[NumpyState, np.ndarray, np.ndarray]: ...

    def step(self, tokens: np.ndarray, state: NumpyState) -> tuple[np.ndarray, NumpyState]: ...


def logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    """log sum exp over ``axis``; -inf where every value is -inf (as torch.logsumexp)."""
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, np.zeros_like(top))
    with np.errstate(divide="ignore"):
        total = np.log(np.exp(values - top).sum(axis=axis, keepdims=True))
    return np.squeeze(total + top, axis=axis)


def ctc_frames(log_probs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CTC log-probabilities [B, T', V] -> [B, T'+1, V]: a dummy slot 0, and beyond each
    utterance's frames blank at log 1 and every label at -inf."""
    beyond = np.arange(log_probs.shape[1])[None, :] >= lengths[:, None]  # B x T'
    frames = np.where(beyond[:, :, None], np.float32(-np.inf), log_probs)
    frames[:, :, CTC_BLANK] = np.where(beyond, np.float32(0.0), frames[:, :, CTC_BLANK])
    dummy = np.zeros((frames.shape[0], 1, frames.shape[2]), dtype=np.float32)
    return np.concatenate([dummy, frames], axis=1)


def prefix_forward(
    frames: np.ndarray,
    r_nonblank: np.ndarray,
    r_blank: np.ndarray,
    last: np.ndarray,
    candidates: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Extend each hypothesis's prefix g by each of its candidates c: frames [N, T+1, V],
    g's forward variables r_nonblank, r_blank [N, T+1], g's last token [N], candidates
    [N, M] -> the forward variables of every g + c [N, T+1, M] twice and its prefix
    scores [N, M] (s2s.tasks.speech.ctc_prefix.prefix_forward)."""
    count, slots = frames.shape[:2]
    index = np.broadcast_to(candidates[:, None, :], (count, slots, candidates.shape[1]))
    label = np.take_along_axis(frames, index, axis=2)  # N x T+1 x M
    blank = frames[:, :, CTC_BLANK][:, :, None]  # N x T+1 x 1
    repeated = (candidates == last[:, None])[:, None, :]  # N x 1 x M
    phi = np.logaddexp(
        r_blank[:, :, None], np.where(repeated, np.float32(-np.inf), r_nonblank[:, :, None])
    )  # N x T+1 x M
    new_nonblank = np.full(label.shape, -np.inf, dtype=np.float32)
    new_blank = np.full(label.shape, -np.inf, dtype=np.float32)
    for t in range(1, slots):
        new_nonblank[:, t] = np.logaddexp(new_nonblank[:, t - 1], phi[:, t - 1]) + label[:, t]
        new_blank[:, t] = np.logaddexp(new_blank[:, t - 1], new_nonblank[:, t - 1]) + blank[:, t]
    scores = logsumexp(phi[:, :-1] + label[:, 1:], axis=1)  # c first emitted at frame t
    return new_nonblank, new_blank, scores


def sentence_rows(state: NumpyState) -> np.ndarray:
    """Each hypothesis row's sentence: a sentence's hypotheses are consecutive, as many
    for each sentence (1 in greedy search, k in a beam of k)."""
    rows, sentences = state.hypotheses[0].shape[0], state.sentences[0].shape[0]
    return np.repeat(np.arange(sentences), rows // sentences)


@dataclass
class JointState:
    """The recogniser's state, the CTC frames [S, T+1, V] per sentence, and per hypothesis
    the scored candidates [N, M], their forward variables [N, T+1, M] and scores [N, M]."""

    inner: NumpyState
    frames: np.ndarray
    candidates: np.ndarray
    r_nonblank: np.ndarray
    r_blank: np.ndarray
    scores: np.ndarray

    def select_hypotheses(self, rows: np.ndarray) -> JointState:
        return JointState(
            self.inner.select_hypotheses(rows),
            self.frames,
            self.candidates[rows],
            self.r_nonblank[rows],
            self.r_blank[rows],
            self.scores[rows],
        )

    def keep_sentences(self, sentences: np.ndarray, rows: np.ndarray) -> JointState:
        return JointState(
            self.inner.keep_sentences(sentences, rows),
            self.frames[sentences],
            self.candidates[rows],
            self.r_nonblank[rows],
            self.r_blank[rows],
            self.scores[rows],
        )


class JointCTCDecoder:
    """A recogniser whose step log-probabilities are (1 - w) x attention + w x CTC prefix
    score; ``weight`` = 1 decodes by CTC alone (the attention decoder still runs)."""

    def __init__(self, decoder: SpeechStepDecoder, weight: float, vocab_size: int) -> None:
        self.decoder = decoder
        self.weight = weight
        self.width = vocab_size if vocab_size <= FULL_SCORING_LIMIT else PRE_BEAM

    def start(self, features: np.ndarray, lengths: np.ndarray) -> JointState:
        """The recogniser's start state and the CTC variables of the empty prefix, as the
        one "candidate" BOS that the first step's previous token selects."""
        inner, log_probs, ctc_lengths = self.decoder.encode(features, lengths)
        frames = ctc_frames(log_probs, ctc_lengths)
        count = frames.shape[0]
        # slot 0: log 1 before frame 1; accumulated in float64, as torch.cumsum does on a CPU
        r_blank = np.cumsum(frames[:, :, CTC_BLANK], axis=1, dtype=np.float64).astype(np.float32)
        r_nonblank = np.full_like(r_blank, -np.inf)
        candidates = np.full((count, 1), BOS_ID, dtype=np.int64)
        scores = np.zeros((count, 1), dtype=np.float32)
        return JointState(
            inner, frames, candidates, r_nonblank[:, :, None], r_blank[:, :, None], scores
        )

    def step(self, tokens: np.ndarray, state: JointState) -> tuple[np.ndarray, JointState]:
        """Previous tokens [N] -> mixed log-probabilities [N, V] (-inf where not scored)."""
        attention, inner = self.decoder.step(tokens, state.inner)
        rows = np.arange(tokens.shape[0])
        position = (state.candidates == tokens[:, None]).argmax(axis=1)
        g_nonblank = state.r_nonblank[rows, :, position]  # N x T+1
        g_blank = state.r_blank[rows, :, position]
        g_score = state.scores[rows, position]
        choice = attention.copy()
        choice[:, EOS_ID] = np.inf  # always scored: CTC must be able to end the sentence
        candidates = np.argsort(-choice, axis=1, kind="stable")[:, : self.width]
        frames = state.frames[sentence_rows(state.inner)]
        new_nonblank, new_blank, new_scores = prefix_forward(
            frames, g_nonblank, g_blank, tokens, candidates
        )
        end_score = np.logaddexp(g_nonblank[:, -1], g_blank[:, -1])[:, None]
        new_scores = np.where(candidates == EOS_ID, end_score, new_scores)
        never = (candidates == BOS_ID) | (candidates == CTC_BLANK)
        new_scores = np.where(never, np.float32(-np.inf), new_scores)
        with np.errstate(invalid="ignore"):  # -inf - -inf: no CTC path, as torch's nan_to_num
            ctc = np.nan_to_num(new_scores - g_score[:, None], nan=-np.inf)
        chosen = np.take_along_axis(attention, candidates, axis=1)
        mixed = ctc if self.weight == 1 else (1 - self.weight) * chosen + self.weight * ctc
        log_probs = np.full(attention.shape, -np.inf, dtype=np.float32)
        np.put_along_axis(log_probs, candidates, mixed.astype(np.float32), axis=1)
        return log_probs, JointState(
            inner, state.frames, candidates, new_nonblank, new_blank, new_scores
        )
