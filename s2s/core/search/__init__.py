"""Search strategies over the decoder-step protocol (`s2s.core.decoding`): greedy search,
batched beam search and sampling, and the loop that searches a data set batch by batch."""

from s2s.core.search.batches import (
    SearchStrategy,
    batch_budget,
    output_limits,
    search_batch,
    search_batches,
    strategy_for,
)
from s2s.core.search.beam import BeamSearch, RunningBeams, length_penalty, top_k_rows
from s2s.core.search.hypothesis import Hypothesis, max_output_lengths
from s2s.core.search.sampling import Sampling, filter_top_k, filter_top_p
from s2s.core.search.single_path import GreedySearch

__all__ = [
    "BeamSearch",
    "GreedySearch",
    "Hypothesis",
    "RunningBeams",
    "Sampling",
    "SearchStrategy",
    "batch_budget",
    "filter_top_k",
    "filter_top_p",
    "length_penalty",
    "max_output_lengths",
    "output_limits",
    "search_batch",
    "search_batches",
    "strategy_for",
    "top_k_rows",
]
