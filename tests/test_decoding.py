"""The decoder-step protocol's state handling (s2s.core.decoding)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from s2s.core.decoding import SearchState, keep_sentences, select_hypotheses, select_rows


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
