"""Greedy and beam search in numpy over `ExportedDecoder`, step for step the search of
`s2s.core.search` (single_path.py and beam.py; their docstrings say why each rule is as
it is): the same length limits, finishing, GNMT length penalty, stopping rules and n-best
lists, so an exported model gives the PyTorch run's tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from s2s.exported.decoder import NumpyState

NBest = tuple[list[list[int]], list[float]]


class StepDecoder(Protocol):
    """What the numpy search drives: `ExportedDecoder` (s2s.exported.decoder)."""

    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> NumpyState: ...

    def step(self, tokens: np.ndarray, state: NumpyState) -> tuple[np.ndarray, NumpyState]: ...


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # sum of log-probabilities (EOS included) / length penalty


def strip_tokens(tokens: list[int]) -> list[int]:
    """Cut at the first EOS and drop padding."""
    out = []
    for token in tokens:
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out


def max_output_lengths(src_lengths: np.ndarray, ratio: float, offset: int) -> np.ndarray:
    """ratio * source length + offset tokens (in float32, as the torch search computes it)."""
    return np.floor(src_lengths.astype(np.float32) * np.float32(ratio)).astype(np.int64) + offset


def length_penalty(lengths: np.ndarray, alpha: float) -> np.ndarray:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha, in float32."""
    return ((np.float32(5.0) + lengths.astype(np.float32)) / np.float32(6.0)) ** np.float32(alpha)


def top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values, best first, and their columns; ties in column order
    among those chosen. torch.topk orders exact ties its own way, so an exact float32 tie
    is where the two searches may part (docs/export.md)."""
    if k < values.shape[1]:
        columns = np.argpartition(-values, k - 1, axis=1)[:, :k]
        columns.sort(axis=1)
    else:
        columns = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    picked = np.take_along_axis(values, columns, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return np.take_along_axis(picked, order, axis=1), np.take_along_axis(columns, order, axis=1)


def greedy_search(
    decoder: StepDecoder, src: np.ndarray, src_lengths: np.ndarray, limits: np.ndarray
) -> list[list[Hypothesis]]:
    """The most probable token at every step; a sentence leaves the batch when it ends."""
    state = decoder.start(src, src_lengths)
    batch = src.shape[0]
    steps = int(limits.max()) + 1
    history = np.full((batch, steps), PAD_ID, dtype=np.int64)
    scores = np.zeros(batch, dtype=np.float32)
    alive, limit = np.arange(batch), limits.copy()
    prev = np.full(batch, BOS_ID, dtype=np.int64)
    for t in range(steps):
        log_probs, state = decoder.step(prev, state)
        token = log_probs.argmax(axis=1)
        token[t >= limit] = EOS_ID
        history[alive, t] = token
        scores[alive] += log_probs[np.arange(len(token)), token]
        ended = token == EOS_ID
        if ended.any():
            keep = np.flatnonzero(~ended)
            if keep.size == 0:
                break
            alive, token, limit = alive[keep], token[keep], limit[keep]
            state = state.keep_sentences(keep, keep)
        prev = token
    return [
        [Hypothesis(strip_tokens(row), float(score))]
        for row, score in zip(history.tolist(), scores.tolist(), strict=True)
    ]
