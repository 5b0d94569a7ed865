"""Grouping examples into token-budget batches by length: plain Python (no torch), so the
runner of exported models (s2s.exported) batches exactly as `s2s translate` does."""

from __future__ import annotations

import random
from collections.abc import Sequence


def token_batches(
    src_lengths: Sequence[int],
    tgt_lengths: Sequence[int] | None,
    max_tokens: int,
    rng: random.Random | None = None,
) -> list[list[int]]:
    """Group example indices into batches whose padded source and target tensors each hold at
    most ``max_tokens`` tokens (one over-long example is a batch of its own).

    Examples are sorted by length so padding stays small; with ``rng`` ties are broken at
    random and the batch order is shuffled, giving different batches every epoch.
    """
    count = len(src_lengths)
    tgt_lengths = tgt_lengths if tgt_lengths is not None else [0] * count
    noise = [rng.random() for _ in range(count)] if rng else [0.0] * count
    order = sorted(range(count), key=lambda i: (tgt_lengths[i], src_lengths[i], noise[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = max(src_lengths[index], tgt_lengths[index])
        if current and (len(current) + 1) * max(longest, length) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if rng:
        rng.shuffle(batches)
    return batches
