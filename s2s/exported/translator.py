"""Translating text with an exported model: the `Translator` interface that
`s2s.tasks.translation.streaming` drives (encode, hypotheses, detokenize), batched by
length and token budget as `s2s translate` batches, searched in numpy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from s2s.data.length_batches import token_batches
from s2s.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from s2s.errors import S2SError
from s2s.exported.beam import NumpyBeamSearch
from s2s.exported.decoder import ExportedDecoder
from s2s.exported.files import read_export_config
from s2s.exported.search import Hypothesis, greedy_search, max_output_lengths
from s2s.tasks.translation.lines import detokenize, encode_lines, search_non_empty


def batch_budget(batch_tokens: int, beam_size: int, longest: int) -> int:
    """Source tokens per batch, as `s2s.core.search.batch_budget` sizes them."""
    return max(batch_tokens * 2 // (beam_size + 1), longest)


def padded(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Source ids with EOS appended, right-padded [B, S] (int64), and their lengths [B]."""
    lengths = np.array([len(row) + 1 for row in rows], dtype=np.int64)
    src = np.full((len(rows), int(lengths.max())), PAD_ID, dtype=np.int64)
    for index, row in enumerate(rows):
        src[index, : len(row) + 1] = [*row, EOS_ID]
    return src, lengths


class ExportedTranslator:
    """An exported directory's tokenisers, graphs and decode settings."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.config = read_export_config(folder)
        if self.config.audio is not None:
            raise S2SError(f"{folder}: an exported speech model; use s2s transcribe with it")
        self.decode = self.config.decode
        self.src_tokenizer = Tokenizer(folder / self.config.src_tokenizer)
        self.tgt_tokenizer = Tokenizer(folder / self.config.tgt_tokenizer)
        self.decoder = ExportedDecoder(folder, self.config, threads)

    def search(
        self, src: np.ndarray, src_lengths: np.ndarray, beam_size: int, nbest: int
    ) -> list[list[Hypothesis]]:
        """n-best lists of one padded batch (`s2s.core.search.strategy_for`'s choice)."""
        limits = max_output_lengths(
            src_lengths, self.decode.max_length_ratio, self.decode.max_length_offset
        )
        if beam_size == 1:
            return greedy_search(self.decoder, src, src_lengths, limits)
        beam = NumpyBeamSearch(beam_size, self.decode.length_penalty, nbest, self.decode.stopping)
        return beam.search(self.decoder, src, src_lengths, limits)

    def search_ids(
        self,
        src_ids: Sequence[Sequence[int]],
        beam_size: int,
        nbest: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses for each tokenised source, in input order."""
        results: list[list[Hypothesis]] = [[] for _ in src_ids]
        if not src_ids:
            return results
        lengths = [len(s) + 1 for s in src_ids]
        budget = batch_budget(self.decode.batch_tokens, beam_size, max(lengths))
        for indices in token_batches(lengths, None, budget):
            src, src_lengths = padded([src_ids[i] for i in indices])
            found = self.search(src, src_lengths, beam_size, nbest)
            for index, hyps in zip(indices, found, strict=True):
                results[index] = hyps
            if on_batch is not None:
                on_batch(len(indices))
        return results

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Source token ids per line; a blank line gives no tokens."""
        return encode_lines(self.src_tokenizer, lines)

    def hypotheses(
        self,
        src_ids: Sequence[Sequence[int]],
        beam_size: int,
        nbest: int = 1,
        on_batch: Callable[[int], None] | None = None,
        options: object | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per source; a source without tokens (a blank line) gets none.
        ``options`` (a run's forced prefixes or sampling) are not served: None only."""
        if options is not None:
            raise S2SError("an exported model decodes without prefixes or sampling")
        return search_non_empty(
            src_ids, lambda sources, _: self.search_ids(sources, beam_size, nbest, on_batch)
        )

    def detokenize(self, hypotheses: Sequence[Sequence[Hypothesis]]) -> list[list[str]]:
        """Text of each source's hypotheses; a source without any gives one empty output."""
        return detokenize(self.tgt_tokenizer, hypotheses)

    def translate(self, lines: Sequence[str], beam_size: int, nbest: int = 1) -> list[list[str]]:
        """Detokenised n-best lists, one per line; an empty line gives one empty output."""
        return self.detokenize(self.hypotheses(self.encode(lines), beam_size, nbest))
