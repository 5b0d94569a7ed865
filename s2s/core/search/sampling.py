"""Sampling: temperature, top-k and nucleus (top-p) filtering, reproducible with a seed.

Filtering works on log-probabilities (or logits): what is filtered out becomes -inf, so the
softmax spreads the probability over what is left. Temperature 0 is greedy decoding.

A token is drawn as the argmax of probabilities over exponential noise, which is how
`torch.multinomial` draws one sample. The noise is one row per step, shared by every
sentence, and the generator is seeded afresh for each batch: a sentence then gets the same
sample alone or in any batch, at any position (identical inputs get identical samples;
another seed gives another).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from s2s.core.decoding import Decoder
from s2s.core.search.hypothesis import Hypothesis
from s2s.core.search.single_path import decode_one_path, most_probable


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row [B, V] (ties at the k-th value are kept)."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most probable
    tokens whose probabilities sum to at least ``p``; the most probable token always stays."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p  # already p without it
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def random_seed() -> int:
    """A fresh seed from the operating system, for sampling without a given one."""
    return int.from_bytes(os.urandom(7), "big")


@dataclass(frozen=True)
class Sampling:
    """Draw each token from the step's distribution, sharpened or flattened by
    ``temperature`` and cut to the ``top_k`` likeliest (0: off) and the nucleus holding
    ``top_p`` of the mass (1: off). ``seed`` None draws a new seed for every batch."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    samples: int = 1  # per sentence, drawn under seeds seed, seed + 1, ...

    @torch.inference_mode()
    def search(
        self, decoder: Decoder, src: Tensor, src_lengths: Tensor, max_lengths: Tensor
    ) -> list[list[Hypothesis]]:
        """Each sentence's ``samples`` samples, scored by the model's (untempered)
        log-probabilities, most probable first."""
        seed = self.seed if self.seed is not None else random_seed()
        drawn: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
        for offset in range(self.samples):
            generator = torch.Generator(device=src.device)
            generator.manual_seed(seed + offset)
            choose = partial(self.choose, generator=generator)
            found = decode_one_path(decoder, src, src_lengths, max_lengths, choose)
            for row, hypothesis in zip(drawn, found, strict=True):
                row.append(hypothesis)
        return [sorted(row, key=lambda h: -h.score) for row in drawn]

    def choose(self, log_probs: Tensor, generator: torch.Generator) -> Tensor:
        """One token per row of log-probabilities [N, V]."""
        if self.temperature == 0:
            return most_probable(log_probs)
        filtered = filter_top_k(log_probs / self.temperature, self.top_k)
        probs = filter_top_p(filtered, self.top_p).float().softmax(dim=-1)
        noise = torch.empty_like(probs[:1]).exponential_(generator=generator)
        return (probs / noise).argmax(dim=-1)
