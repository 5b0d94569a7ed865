"""Turning text into translations with a trained model: batching by length, search, and
restoring the input order. Used by validation, `s2s evaluate` and `s2s translate` alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from s2s.batching import collate, token_batches
from s2s.config import DecodeConfig
from s2s.model import Seq2Seq
from s2s.search import Hypothesis, beam_search, greedy_search, max_output_lengths
from s2s.tokenizer import TokenizerPair


@dataclass
class Translator:
    model: Seq2Seq
    tokenizers: TokenizerPair
    decode: DecodeConfig
    device: torch.device

    def search_ids(
        self, src_ids: Sequence[Sequence[int]], beam_size: int, nbest: int = 1
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses for each tokenised source, in input order."""
        self.model.eval()
        results: list[list[Hypothesis]] = [[] for _ in src_ids]
        lengths = [len(s) + 1 for s in src_ids]
        for indices in token_batches(lengths, None, max(self.decode.batch_tokens, max(lengths))):
            batch = collate(indices, src_ids).to(self.device)
            limits = max_output_lengths(
                batch.src_lengths, self.decode.max_length_ratio, self.decode.max_length_offset
            )
            if beam_size == 1:
                found = [
                    [h] for h in greedy_search(self.model, batch.src, batch.src_lengths, limits)
                ]
            else:
                found = beam_search(
                    self.model,
                    batch.src,
                    batch.src_lengths,
                    limits,
                    beam_size,
                    self.decode.length_penalty,
                    nbest,
                )
            for index, hyps in zip(indices, found, strict=True):
                results[index] = hyps
        return results

    def translate(self, lines: Sequence[str], beam_size: int, nbest: int = 1) -> list[list[str]]:
        """Detokenised n-best lists, one per line; an empty line gives one empty output."""
        wanted = [i for i, line in enumerate(lines) if line.strip()]
        src_ids = self.tokenizers.src.encode_batch([lines[i] for i in wanted])
        outputs: list[list[str]] = [[""] for _ in lines]
        found = self.search_ids(src_ids, beam_size, nbest)
        for index, hyps in zip(wanted, found, strict=True):
            outputs[index] = [self.tokenizers.tgt.decode(h.tokens) for h in hyps] or [""]
        return outputs
