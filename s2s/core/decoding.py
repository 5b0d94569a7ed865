"""The decoder-step protocol: what search needs from a model, and nothing more.

A decoder starts from its input (a source batch, or prompts for a language model) and then
advances one token per hypothesis per step. Its state is a `SearchState`, whose structure is
declared rather than known: two trees (nested tuples, lists, NamedTuples, ``None`` leaves)
of tensors with the batch on dimension 0. ``hypotheses`` has one row per hypothesis and
follows them when search reorders, expands or drops rows; ``sentences`` has one row per
sentence, read in place by that sentence's consecutive hypotheses (an encoder output that a
beam need not copy k times), and only loses the rows of sentences that are done. Search
reorders either tree by a gather, never by looking inside.

Sentences may also join a running search (`join_states`, continuous batching): the trees
are concatenated row-wise, and a ``sentences`` tensor narrower than the other side's is
padded with zeros beyond its own extent. A decoder must read such zeros as nothing (the
encoder output's mask is False there and its ids PAD); a ``hypotheses`` tree must agree in
shape, since there is no neutral padding for a decoder's running state.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from s2s.cells import rebuild_state


class SearchState(NamedTuple):
    """A decoder's state as search sees it (see the module docstring)."""

    hypotheses: Any  # tree of tensors, one row per hypothesis
    sentences: Any = None  # tree of tensors, one row per sentence, shared by its hypotheses


class Decoder(Protocol):
    """A model (or an adapter around one) that search can drive.

    ``scores_chosen_rows``: `step` accepts ``rows`` (indices) and then returns
    log-probabilities for those rows only, so beam search can skip finished hypotheses.
    """

    scores_chosen_rows: bool

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        """The state before the first token, for a batch of inputs [B, ...] and lengths [B]."""
        ...

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        """Previous tokens [N] (BOS first) -> (log-probabilities [N, V] in fp32, new state)."""
        ...


def select_rows(tree: Any, index: Tensor) -> Any:
    """Rows ``index`` of every tensor in a tree of batch-first tensors (``None`` stays)."""
    if tree is None:
        return None
    if isinstance(tree, Tensor):
        return tree.index_select(0, index)
    selected = [select_rows(value, index) for value in tree]
    return selected if isinstance(tree, list) else rebuild_state(tree, selected)


def select_hypotheses(state: SearchState, rows: Tensor) -> SearchState:
    """Hypothesis rows ``rows`` (reordered, repeated or dropped); sentences stay as they are."""
    return SearchState(select_rows(state.hypotheses, rows), state.sentences)


def keep_sentences(state: SearchState, sentences: Tensor, rows: Tensor) -> SearchState:
    """Only the sentences ``sentences`` and their hypothesis rows ``rows`` (compaction)."""
    return SearchState(select_rows(state.hypotheses, rows), select_rows(state.sentences, sentences))


def _padded(tensor: Tensor, shape: torch.Size) -> Tensor:
    """``tensor`` with zeros beyond its extent up to ``shape`` (all but dimension 0)."""
    if tensor.shape[1:] == shape:
        return tensor
    out = tensor.new_zeros((tensor.size(0), *shape))
    out[tuple(slice(0, size) for size in tensor.shape)] = tensor
    return out


def join_rows(first: Any, second: Any, pad: bool) -> Any:
    """Two trees of batch-first tensors, ``first``'s rows then ``second``'s; tensors that
    differ beyond dimension 0 are zero-padded to their common extent when ``pad``, else a
    ValueError."""
    if first is None or second is None:
        if first is not second:
            raise ValueError("join_rows: one state has a part the other lacks")
        return None
    if isinstance(first, Tensor):
        if first.shape[1:] != second.shape[1:]:
            if not pad or first.dim() != second.dim():
                raise ValueError(
                    f"join_rows: rows of shapes {tuple(first.shape[1:])} and "
                    f"{tuple(second.shape[1:])} cannot be joined"
                )
            shape = torch.Size(
                max(a, b) for a, b in zip(first.shape[1:], second.shape[1:], strict=True)
            )
            first, second = _padded(first, shape), _padded(second, shape)
        return torch.cat([first, second])
    joined = [join_rows(a, b, pad) for a, b in zip(first, second, strict=True)]
    return joined if isinstance(first, list) else rebuild_state(first, joined)


def join_states(running: SearchState, joining: SearchState) -> SearchState:
    """The state of a search that ``joining``'s sentences join (see the module docstring)."""
    return SearchState(
        join_rows(running.hypotheses, joining.hypotheses, pad=False),
        join_rows(running.sentences, joining.sentences, pad=True),
    )
