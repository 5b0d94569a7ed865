"""Searching batch after batch of a data set with the strategy a decoding command asks for."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from torch import Tensor

from s2s.config import DecodeConfig
from s2s.core.decoding import Decoder
from s2s.core.search.beam import BeamSearch
from s2s.core.search.constraints import ConstrainedDecoder, Constraints
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


def constrained(
    decoder: Decoder, decode: DecodeConfig, rows: int, prefixes: Sequence[Sequence[int]] | None
) -> Decoder:
    """``decoder`` under ``decode``'s output constraints and the batch's forced target
    ``prefixes`` (one per row, or None), or itself when there are none."""
    constraints = Constraints(prefixes, decode.no_repeat_ngram_size, [decode.min_length] * rows)
    return ConstrainedDecoder(decoder, constraints) if constraints.active() else decoder


def output_limits(
    src_lengths: Tensor, decode: DecodeConfig, prefixes: Sequence[Sequence[int]] | None = None
) -> Tensor:
    """Each source's output length limit: ``decode``'s ratio and offset to its length, and
    never below decode.min_length or its forced prefix."""
    limits = max_output_lengths(src_lengths, decode.max_length_ratio, decode.max_length_offset)
    limits = limits.clamp(min=decode.min_length)
    if prefixes is not None:
        longest = torch.tensor([len(p) for p in prefixes], dtype=limits.dtype)
        limits = torch.maximum(limits, longest.to(limits.device))
    return limits


def search_batch(
    decoder: Decoder,
    src: Tensor,
    src_lengths: Tensor,
    decode: DecodeConfig,
    beam_size: int,
    nbest: int = 1,
    prefixes: Sequence[Sequence[int]] | None = None,
    strategy: SearchStrategy | None = None,
) -> list[list[Hypothesis]]:
    """The n-best of each row of a batch (``strategy``, else `strategy_for`), each
    starting with its forced prefix if given, within `output_limits`."""
    limits = output_limits(src_lengths, decode, prefixes)
    chosen = strategy or strategy_for(decode, beam_size, nbest)
    decoder = constrained(decoder, decode, src.size(0), prefixes)
    return chosen.search(decoder, src, src_lengths, limits)


def search_batches(
    decoder: Decoder,
    batches: Iterable[list[int]],
    make_batch: Callable[[list[int]], Batch],
    decode: DecodeConfig,
    device: torch.device,
    beam_size: int,
    nbest: int = 1,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    prefixes: Sequence[Sequence[int]] | None = None,
    strategy: SearchStrategy | None = None,
) -> Iterator[tuple[Batch, list[list[Hypothesis]]]]:
    """Search batch after batch of example indices: ``make_batch`` builds each on the CPU,
    it moves to ``device`` and is searched under ``autocast`` (decode.amp's precision).
    ``prefixes`` (by example index) are forced target prefixes; ``strategy`` replaces the
    one ``decode`` and ``beam_size`` choose (sampling). Yields each batch with its rows'
    n-best lists, for the caller to put in input order."""
    for indices in batches:
        batch = make_batch(indices).to(device)
        wanted = None if prefixes is None else [prefixes[i] for i in batch.indices]
        with autocast():
            found = search_batch(
                decoder, batch.src, batch.src_lengths, decode, beam_size, nbest, wanted, strategy
            )
        yield batch, found
