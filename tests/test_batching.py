"""Token-budget batching: never over budget, every example exactly once per epoch."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from s2s.data.batching import collate, token_batches
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=300),
    budget=st.integers(60, 2000),
    seed=st.integers(0, 10),
)
def test_batches_fit_budget_and_cover_every_example_once(lengths, budget, seed) -> None:
    src = [s for s, _ in lengths]
    tgt = [t for _, t in lengths]
    batches = token_batches(src, tgt, budget, random.Random(seed))
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(src[i] for i in batch) <= budget
        assert len(batch) * max(tgt[i] for i in batch) <= budget


def test_epochs_are_shuffled_differently() -> None:
    lengths = [random.Random(1).randint(3, 30) for _ in range(500)]
    first = token_batches(lengths, lengths, 300, random.Random(1))
    second = token_batches(lengths, lengths, 300, random.Random(2))
    assert first != second


def test_collate_pads_and_marks_targets() -> None:
    batch = collate([1, 0], [[5, 6], [7, 8, 9]], [[10], [11, 12]])
    assert batch.src.tolist() == [[7, 8, 9, EOS_ID], [5, 6, EOS_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [4, 3]
    assert batch.tgt_in.tolist() == [[BOS_ID, 11, 12], [BOS_ID, 10, PAD_ID]]
    assert batch.tgt_out.tolist() == [[11, 12, EOS_ID], [10, EOS_ID, PAD_ID]]
    assert batch.num_tgt_tokens == 5
