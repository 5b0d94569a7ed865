"""Searching batch after batch of a data set with the strategy a decoding command asks for."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from torch import Tensor

from s2s.config import DecodeConfig
from s2s.core.decoding import Decoder
from s2s.core.search.beam import BeamSearch
from s2s.core.search.hypothesis import Hypothesis, max_output_lengths
from s2s.core.search.single_path import GreedySearch
from s2s.data.batching import Batch


class SearchStrategy(Protocol):
    """Greedy search, beam search, sampling: n-best lists for a batch of inputs."""

    def search(
        self, decoder: Decoder, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
    ) -> list[list[Hypothesis]]: ...


def strategy_for(decode: DecodeConfig, beam_size: int, nbest: int = 1) -> SearchStrategy:
    """Greedy search for a beam of 1, else beam search with ``decode``'s length penalty
    and stopping rule."""
    if beam_size == 1:
        return GreedySearch()
    return BeamSearch(beam_size, decode.length_penalty, nbest, decode.stopping)


def batch_budget(batch_tokens: int, beam_size: int, longest: int) -> int:
    """Source tokens (or frames) per decoding batch: ``batch_tokens`` for greedy search. A
    beam of k carries k hypotheses per sentence, so its batches hold 2 / (k + 1) of that
    (2 000 of 6 000 for a beam of 5): on the CPU, beam-5 decoding of Multi30k was fastest
    there and about 15 % slower with 6 000 (docs/performance-log.md). Never below ``longest``,
    the longest source, which must fit in a batch."""
    return max(batch_tokens * 2 // (beam_size + 1), longest)


def search_batch(
    decoder: Decoder,
    src: Tensor,
    src_lengths: Tensor,
    decode: DecodeConfig,
    beam_size: int,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """The n-best of each row of a batch (`strategy_for`); output lengths are limited by
    ``decode``'s ratio and offset to the source length."""
    limits = max_output_lengths(src_lengths, decode.max_length_ratio, decode.max_length_offset)
    return strategy_for(decode, beam_size, nbest).search(decoder, src, src_lengths, limits)


def search_batches(
    decoder: Decoder,
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
            found = search_batch(decoder, batch.src, batch.src_lengths, decode, beam_size, nbest)
        yield batch, found
