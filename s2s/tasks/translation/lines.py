"""What every text decoder does around its search, without torch: blank lines get no tokens
and are not searched, and a source without hypotheses gives one empty output. Shared by
`Translator` and the exported-model runner (`s2s.exported`), so both keep `s2s translate`'s
line-for-line contract the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

Found = TypeVar("Found")


class TextTokenizer(Protocol):
    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...


def encode_lines(tokenizer: TextTokenizer, lines: Sequence[str]) -> list[list[int]]:
    """Token ids per line; a blank line gives no tokens."""
    wanted = [i for i, line in enumerate(lines) if line.strip()]
    ids: list[list[int]] = [[] for _ in lines]
    encoded = tokenizer.encode_batch([lines[i] for i in wanted])
    for index, seq in zip(wanted, encoded, strict=True):
        ids[index] = seq
    return ids


def search_non_empty(
    src_ids: Sequence[Sequence[int]],
    search: Callable[[list[Sequence[int]], list[int]], list[list[Found]]],
) -> list[list[Found]]:
    """``search`` (of the sources with tokens, and their positions) put back in input
    order; a source without tokens (a blank line) gets no hypotheses."""
    wanted = [i for i, seq in enumerate(src_ids) if seq]
    results: list[list[Found]] = [[] for _ in src_ids]
    found = search([src_ids[i] for i in wanted], wanted)
    for index, hyps in zip(wanted, found, strict=True):
        results[index] = hyps
    return results


def detokenize(tokenizer: TextTokenizer, hypotheses: Sequence[Sequence[Any]]) -> list[list[str]]:
    """Text of each source's hypotheses; a source without any gives one empty output."""
    return [[tokenizer.decode(h.tokens) for h in hyps] or [""] for hyps in hypotheses]
