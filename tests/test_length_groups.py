"""A batch of sources of widely different lengths is encoded for search in groups of similar
length (s2s.core.length_groups): cheaper, and every sentence's search is unchanged."""

from __future__ import annotations

import pytest
import torch
from helpers import VOCAB, make_model, sharp_model

import s2s.core.seq2seq as seq2seq_module
from s2s.core.length_groups import group_cost, length_groups
from s2s.core.search import BeamSearch
from s2s.core.search.hypothesis import max_output_lengths
from s2s.data.batching import collate


def mixed_batch(short: int = 3, long: int = 40, each: int = 30, seed: int = 0):
    """Sources of ``short`` and ``long`` tokens interleaved, as a server's batch arrives."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [short, long] * each
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    return collate(list(range(len(sentences))), sentences)


def test_groups_partition_the_batch_by_length() -> None:
    lengths = [12, 3, 40, 3, 12, 40, 25, 3] * 8
    groups = length_groups(lengths)
    assert sorted(row for group in groups for row in group) == list(range(len(lengths)))
    longest = [max(lengths[row] for row in group) for group in groups]
    shortest = [min(lengths[row] for row in group) for group in groups]
    assert longest == sorted(longest)
    assert all(s > previous for s, previous in zip(shortest[1:], longest, strict=False))
    cost = sum(group_cost(top, len(group)) for top, group in zip(longest, groups, strict=True))
    assert len(groups) > 1 and cost < group_cost(40, len(lengths))


@pytest.mark.parametrize("lengths", [[], [7], [15, 16, 14, 15, 16] * 20, [3, 40, 3]])
def test_one_group_when_cutting_saves_nothing(lengths: list[int]) -> None:
    """Similar lengths, or a batch too small to pay for a second call, stay together."""
    assert length_groups(lengths) == (
        [sorted(range(len(lengths)), key=lengths.__getitem__)] if lengths else []
    )


def test_grouped_encoding_gives_every_row_its_own_output() -> None:
    model = make_model()
    batch = mixed_batch()
    assert len(length_groups(batch.src_lengths.tolist())) > 1
    with torch.inference_mode():
        whole = model.encode(batch.src, batch.src_lengths)
        grouped = model.encode_by_length(batch.src, batch.src_lengths)
    assert torch.equal(grouped.src_mask, whole.src_mask)
    assert torch.equal(grouped.src_ids, whole.src_ids)
    real = whole.src_mask.unsqueeze(-1)
    torch.testing.assert_close(grouped.memory * real, whole.memory * real, rtol=0, atol=1e-6)
    torch.testing.assert_close(grouped.keys * real, whole.keys * real, rtol=0, atol=1e-6)


def test_beam_search_is_the_same_with_grouped_encoding(monkeypatch) -> None:
    model = sharp_model()
    batch = mixed_batch(seed=1)
    limits = max_output_lengths(batch.src_lengths, 1.5, 3)
    search = BeamSearch(beam_size=4, nbest=2)
    grouped = search.search(model, batch.src, batch.src_lengths, limits)
    monkeypatch.setattr(
        seq2seq_module, "length_groups", lambda lengths: [list(range(len(lengths)))]
    )
    whole = search.search(model, batch.src, batch.src_lengths, limits)
    assert [[h.tokens for h in n] for n in grouped] == [[h.tokens for h in n] for n in whole]
    for found, expected in zip(grouped, whole, strict=True):
        assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-5)
