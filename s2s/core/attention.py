"""Attention over encoder states: Luong dot and general, Bahdanau additive.

Keys are computed from the memory once per sentence (`keys`), then every query, a whole
target sequence in training or one step in search, is scored with one batched matmul.
No state is kept on the module between calls.

Beam search may pass one memory row per sentence for the k consecutive query rows of its
beams: the k queries are then scored as one k-row matmul per sentence, which on the CPU
took a quarter of the time of k one-row matmuls over k copies of the memory.

In CPU inference over bf16, attention scored by matmuls reads fp32 copies of the memory
and keys (`memory_and_keys`). oneDNN builds a bf16 kernel for every shape of batched
matmul, and a search meets a new one whenever a sentence finishes or a batch of another
source length starts: over the 1 000 test sentences of the peer benchmark model, 300 of
them, 110 ms of a 2.4 s first pass. PyTorch's fp32 batched matmul builds nothing and is as
fast at these sizes (a 5-row query against 10-30 source states).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from s2s.errors import ConfigError


class Attention(nn.Module):
    """Base: subclasses define `keys` and `scores`; masking and softmax are shared."""

    # Whether `scores` is a batched matmul of queries and keys (see the module docstring).
    scored_by_matmul = False

    def keys(self, memory: Tensor) -> Tensor:
        """memory [B, S, M] -> keys used by `scores`."""
        return memory

    def memory_and_keys(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The memory and keys that `forward` reads, computed once per batch: fp32 copies
        in CPU inference over bf16 when scores are a matmul, else as they are."""
        keys = self.keys(memory)
        if self.scored_by_matmul and _fp32_reads_faster(memory):
            return memory.float(), keys.float()
        return memory, keys

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
        dtype = query.dtype
        query = query.reshape(memory.size(0), -1, query.size(-1))  # B x (N/B * T) x H
        fp32_copies = keys.dtype == torch.float32 != dtype  # from memory_and_keys
        # Autocast would cast the fp32 copies down to bf16 again.
        with torch.autocast(query.device.type, enabled=False) if fp32_copies else nullcontext():
            scores = self.scores(query.to(keys.dtype), keys).float()
            scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
            weights = scores.softmax(dim=-1).to(memory.dtype)
            context = torch.bmm(weights, memory)
        if fp32_copies:
            context, weights = context.to(dtype), weights.to(dtype)
        return context.view(rows, steps, -1), weights.view(rows, steps, -1)


class DotAttention(Attention):
    """Luong dot: score = q . m (query and memory of the same width)."""

    scored_by_matmul = True

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


def _fp32_reads_faster(memory: Tensor) -> bool:
    """CPU inference over bf16 (see the module docstring)."""
    return (
        memory.dtype == torch.bfloat16
        and memory.device.type == "cpu"
        and not torch.is_grad_enabled()
    )


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
