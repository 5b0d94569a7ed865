"""Cutting a batch of sources into groups of similar length for a recurrent encoder.

A fused recurrent kernel steps every row of a batch to its longest source. `s2s translate`
sorts its input by length, so its batches carry little padding; a batch that `s2s serve`
gathers in arrival order carries about as much padding as tokens. Encoding such a batch in
groups of similar length gives every row the same output (a row's encoder output depends on
its own tokens only) for less work, when each group saves more steps than its call costs.

Costs are counted in row-steps (one row through one time step of every encoder layer). On
the CPU a call costs about `CALL_COST` of them before its first step (PyTorch hands oneDNN
the layer's weights in their plain layout, so each call reorders them), and a step costs no
less than `FREE_ROWS` rows (each step reads the whole weight matrix, however few rows it
multiplies). Measured with `tools/bench_encoder_groups.py` (docs/performance-log.md).
"""

from __future__ import annotations

from collections.abc import Sequence

CALL_COST = 60  # row-steps that one more encoder call costs on the CPU
FREE_ROWS = 4  # a step costs at least this many rows' work


def group_cost(longest: int, rows: int) -> int:
    """Row-steps to encode ``rows`` sources padded to ``longest`` tokens in one call."""
    return CALL_COST + longest * max(FREE_ROWS, rows)


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """The indices of ``lengths`` in groups of similar length, shortest first, that cost
    least to encode by `group_cost`: one group when cutting saves nothing.

    Sorted by length, the best groups are runs, cut where the length changes; the cheapest
    cuts come from a shortest path over those places (quadratic in the distinct lengths,
    a few dozen in a batch of sentences)."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ranked = [lengths[index] for index in order]
    cuts = [0, *(i for i in range(1, len(ranked)) if ranked[i] != ranked[i - 1]), len(ranked)]
    cheapest = {0: 0}  # cut -> least cost of the groups before it
    came_from: dict[int, int] = {}
    for end in cuts[1:]:
        longest = ranked[end - 1]
        cost, start = min(
            (cheapest[start] + group_cost(longest, end - start), start)
            for start in cuts
            if start < end
        )
        cheapest[end], came_from[end] = cost, start
    groups, end = [], len(ranked)
    while end:
        start = came_from[end]
        groups.append(order[start:end])
        end = start
    return groups[::-1]
