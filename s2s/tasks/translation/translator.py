"""Turning text into translations with a trained model: batching by length, search, and
restoring the input order. Used by validation, `s2s evaluate` and `s2s translate` alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from s2s.config import DecodeConfig
from s2s.core.decoding import Decoder
from s2s.core.search import Hypothesis, SearchStrategy, batch_budget, search_batches
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate, token_batches
from s2s.data.tokenizer import TokenizerPair
from s2s.kernels.packed_linear import ensure_eval_mode
from s2s.kernels.precision import decode_autocast
from s2s.tasks.translation.lines import detokenize, encode_lines, search_non_empty


@dataclass
class SearchOptions:
    """How a list of sources is searched beyond the beam size: forced target prefixes (token
    ids, one per source, or None) and a strategy replacing the beam's (sampling)."""

    prefixes: Sequence[Sequence[int]] | None = None
    strategy: SearchStrategy | None = None


@dataclass
class Translator:
    """``model`` (or ``decoder``, an ensemble or fusion around it) turning lines into
    n-best lists, batched by length, in input order."""

    model: Seq2Seq
    tokenizers: TokenizerPair
    decode: DecodeConfig
    device: torch.device
    decoder: Decoder | None = None  # what search drives: the model unless given

    def __post_init__(self) -> None:
        self.autocast = decode_autocast(self.decode.amp, self.device)

    def search_ids(
        self,
        src_ids: Sequence[Sequence[int]],
        beam_size: int,
        nbest: int = 1,
        on_batch: Callable[[int], None] | None = None,
        options: SearchOptions | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses for each tokenised source, in input order; ``on_batch`` hears
        how many sentences each finished batch held (for progress bars)."""
        ensure_eval_mode(self.model)
        options = options or SearchOptions()
        results: list[list[Hypothesis]] = [[] for _ in src_ids]
        if not src_ids:
            return results
        lengths = [len(s) + 1 for s in src_ids]
        budget = batch_budget(self.decode.batch_tokens, beam_size, max(lengths))
        batches = token_batches(lengths, None, budget)
        searched = search_batches(
            self.decoder or self.model,
            batches,
            lambda indices: collate(indices, src_ids),
            self.decode,
            self.device,
            beam_size,
            nbest,
            self.autocast,
            options.prefixes,
            options.strategy,
        )
        for batch, found in searched:
            for index, hyps in zip(batch.indices, found, strict=True):
                results[index] = hyps
            if on_batch is not None:
                on_batch(len(batch.indices))
        return results

    def greedy(self, src_ids: Sequence[Sequence[int]]) -> list[str]:
        """The greedy output text of each tokenised source, in input order (validation)."""
        found = self.search_ids(src_ids, beam_size=1)
        return [self.tokenizers.tgt.decode(hyps[0].tokens if hyps else []) for hyps in found]

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Source token ids per line; a blank line gives no tokens."""
        return encode_lines(self.tokenizers.src, lines)

    def hypotheses(
        self,
        src_ids: Sequence[Sequence[int]],
        beam_size: int,
        nbest: int = 1,
        on_batch: Callable[[int], None] | None = None,
        options: SearchOptions | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per source; a source without tokens (a blank line) gets none."""

        def search(sources: list[Sequence[int]], where: list[int]) -> list[list[Hypothesis]]:
            chosen = options
            if options is not None and options.prefixes is not None:
                chosen = SearchOptions([options.prefixes[i] for i in where], options.strategy)
            return self.search_ids(sources, beam_size, nbest, on_batch, chosen)

        return search_non_empty(src_ids, search)

    def detokenize(self, hypotheses: Sequence[Sequence[Hypothesis]]) -> list[list[str]]:
        """Text of each source's hypotheses; a source without any gives one empty output."""
        return detokenize(self.tokenizers.tgt, hypotheses)

    def translate_ids(
        self,
        src_ids: Sequence[Sequence[int]],
        beam_size: int,
        nbest: int = 1,
        on_batch: Callable[[int], None] | None = None,
        options: SearchOptions | None = None,
    ) -> list[list[str]]:
        """Detokenised n-best lists, one per source; no tokens gives one empty output."""
        return self.detokenize(self.hypotheses(src_ids, beam_size, nbest, on_batch, options))

    def encode_prefixes(self, prefixes: Sequence[str]) -> list[list[int]]:
        """Target token ids of each forced prefix (an empty line: none)."""
        encoded = self.tokenizers.tgt.encode_batch([p for p in prefixes if p.strip()])
        found = iter(encoded)
        return [next(found) if p.strip() else [] for p in prefixes]

    def translate(
        self,
        lines: Sequence[str],
        beam_size: int,
        nbest: int = 1,
        on_batch: Callable[[int], None] | None = None,
        options: SearchOptions | None = None,
    ) -> list[list[str]]:
        """Detokenised n-best lists, one per line; an empty line gives one empty output."""
        return self.translate_ids(self.encode(lines), beam_size, nbest, on_batch, options)
