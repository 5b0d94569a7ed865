"""The decoder-step protocol's state handling (s2s.core.decoding)."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from s2s.core.decoding import (
    SearchState,
    join_states,
    keep_sentences,
    select_hypotheses,
    select_rows,
)


class Pair(NamedTuple):
    left: torch.Tensor
    right: torch.Tensor | None


def test_select_rows_gathers_every_tensor_of_a_tree_and_keeps_its_types() -> None:
    tree = ([torch.arange(3), (torch.arange(6).view(3, 2),)], Pair(torch.arange(3) * 10, None))
    selected = select_rows(tree, torch.tensor([2, 0, 0]))
    assert isinstance(selected, tuple) and isinstance(selected[0], list)
    assert isinstance(selected[1], Pair) and selected[1].right is None
    assert selected[0][0].tolist() == [2, 0, 0]
    assert selected[0][1][0].tolist() == [[4, 5], [0, 1], [0, 1]]
    assert selected[1].left.tolist() == [20, 0, 0]


def test_hypotheses_follow_their_rows_and_sentences_stay_until_compacted() -> None:
    state = SearchState(torch.tensor([1, 2, 3, 4]), torch.tensor([10, 20]))
    moved = select_hypotheses(state, torch.tensor([1, 1, 3, 2]))
    assert moved.hypotheses.tolist() == [2, 2, 4, 3] and moved.sentences.tolist() == [10, 20]
    kept = keep_sentences(state, torch.tensor([1]), torch.tensor([2, 3]))
    assert kept.hypotheses.tolist() == [3, 4] and kept.sentences.tolist() == [20]


def test_joining_pads_sentence_rows_with_zeros_and_keeps_hypothesis_rows_as_they_are() -> None:
    running = SearchState(torch.tensor([[1.0], [2.0]]), Pair(torch.ones(1, 3), None))
    joining = SearchState(torch.tensor([[3.0]]), Pair(torch.full((1, 5), 2.0), None))
    joined = join_states(running, joining)
    assert joined.hypotheses.tolist() == [[1.0], [2.0], [3.0]]
    assert isinstance(joined.sentences, Pair) and joined.sentences.right is None
    assert joined.sentences.left.tolist() == [[1, 1, 1, 0, 0], [2, 2, 2, 2, 2]]


def test_hypothesis_rows_of_different_shapes_cannot_join() -> None:
    running = SearchState(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\) cannot be joined"):
        join_states(running, SearchState(torch.zeros(1, 4), None))
