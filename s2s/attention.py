"""Attention over encoder states: Luong dot and general, Bahdanau additive.

Keys are computed from the memory once per sentence (`keys`), then every query, a whole
target sequence in training or one step in search, is scored with one batched matmul.
No state is kept on the module between calls.

Beam search may pass one memory row per sentence for the k consecutive query rows of its
beams: the k queries are then scored as one k-row matmul per sentence, which on the CPU
took a quarter of the time of k one-row matmuls over k copies of the memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s.errors import ConfigError


class Attention(nn.Module):
    """Base: subclasses define `keys` and `scores`; masking and softmax are shared."""

    def keys(self, memory: Tensor) -> Tensor:
        """memory [B, S, M] -> keys used by `scores`."""
        return memory

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """query [B, T, H], keys -> scores [B, T, S]."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query [N, T, H] over memory [B, S, M] (keys and src_mask [B, S] alike), where
        memory row b serves query rows b * N/B to (b + 1) * N/B - 1. Returns context
        [N, T, M] and weights [N, T, S]; masked sources get weight 0."""
        rows, steps = query.shape[:2]
        query = query.reshape(memory.size(0), -1, query.size(-1))  # B x (N/B * T) x H
        scores = self.scores(query, keys).float()
        scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(dim=-1).to(memory.dtype)
        context = torch.bmm(weights, memory)
        return context.view(rows, steps, -1), weights.view(rows, steps, -1)


class DotAttention(Attention):
    """Luong dot: score = q . m (query and memory of the same width)."""

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


class GeneralAttention(DotAttention):
    """Luong general: score = q . (W m); W m is computed once per sentence."""

    def __init__(self, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.project = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.project(memory)


class AdditiveAttention(Attention):
    """Bahdanau: score = v . tanh(W q + U m); U m is computed once per sentence."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int | None = None):
        super().__init__()
        size = attention_size or query_size
        self.query_project = nn.Linear(query_size, size, bias=False)
        self.key_project = nn.Linear(memory_size, size)
        self.energy = nn.Linear(size, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.key_project(memory)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        # B x T x 1 x A + B x 1 x S x A -> B x T x S
        hidden = torch.tanh(self.query_project(query).unsqueeze(2) + keys.unsqueeze(1))
        return self.energy(hidden).squeeze(-1)


def build_attention(kind: str, query_size: int, memory_size: int) -> Attention:
    """The attention named in the recipe (the schema already restricts ``kind``)."""
    if kind == "dot" and query_size != memory_size:
        raise ConfigError(
            f"model.attention: 'dot' needs the decoder output width ({query_size}) to equal "
            f"the encoder output width ({memory_size}); use 'general' or 'bahdanau'"
        )
    builders = {
        "dot": DotAttention,
        "general": lambda: GeneralAttention(query_size, memory_size),
        "bahdanau": lambda: AdditiveAttention(query_size, memory_size),
    }
    return builders[kind]()
