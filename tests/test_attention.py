"""Attention over fp32 copies of the memory and keys in CPU inference over bf16
(s2s.core.attention): the same weights and context as over fp32, in the caller's precision."""

from __future__ import annotations

import pytest
import torch

from s2s.config import ModelConfig
from s2s.core.attention import build_attention
from s2s.core.cell_registry import cell_factory
from s2s.core.seq2seq import Seq2Seq

WIDTH = 16


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_model(attention: str) -> Seq2Seq:
    config = ModelConfig(embed_size=WIDTH, hidden_size=WIDTH, dropout=0.0, attention=attention)
    return Seq2Seq(config, cell_factory("lstm", {}), 30, 30, 0, share_vocab=True)


@pytest.mark.parametrize("attention", ["dot", "general"])
def test_bf16_inference_keeps_fp32_memory_and_keys_for_matmul_scores(attention: str) -> None:
    model = make_model(attention).bfloat16().eval()
    src, lengths = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2])
    with torch.no_grad():
        encoded = model.encode(src, lengths)
        assert encoded.memory.dtype == encoded.keys.dtype == torch.float32
        state, feed = model.initial_state(encoded)
        assert feed.dtype == torch.bfloat16  # the decoder runs in the weights' precision
        log_probs, (_, feed), weights = model.decode_step(
            torch.tensor([1, 1]), (state, feed), encoded
        )
        assert feed.dtype == weights.dtype == torch.bfloat16
        assert torch.isfinite(log_probs).all()
    trained = model.encode(src, lengths)  # gradients on: training keeps bf16
    assert trained.memory.dtype == trained.keys.dtype == torch.bfloat16


def test_additive_attention_keeps_its_keys_in_bf16() -> None:
    """Its scores are tanh over every query and key pair, not a matmul: fp32 copies there
    would double the largest tensor of the step."""
    model = make_model("bahdanau").bfloat16().eval()
    with torch.no_grad():
        encoded = model.encode(torch.tensor([[5, 6, 7]]), torch.tensor([3]))
    assert encoded.memory.dtype == encoded.keys.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["dot", "general"])
def test_attention_over_fp32_copies_is_fp32_attention_in_the_querys_precision(kind: str):
    attention = build_attention(kind, WIDTH, WIDTH).bfloat16().eval()
    memory = torch.randn(3, 7, WIDTH).bfloat16()
    query = torch.randn(6, 1, WIDTH).bfloat16()  # two beams per sentence
    src_mask = torch.arange(7) < torch.tensor([7, 4, 2]).unsqueeze(1)
    with torch.no_grad():
        memory, keys = attention.memory_and_keys(memory)
        assert memory.dtype == keys.dtype == torch.float32
        exact = attention(query.float(), keys, memory, src_mask)
        context, weights = attention(query, keys, memory, src_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # must not cast the copies down
            under_autocast = attention(query, keys, memory, src_mask)
    assert context.dtype == weights.dtype == torch.bfloat16
    for got, want in zip((context, weights), exact, strict=True):
        torch.testing.assert_close(got, want.bfloat16(), atol=0, rtol=0)
    torch.testing.assert_close(under_autocast, (context, weights), atol=0, rtol=0)
    assert (weights[4:] == 0).sum() == 2 * 5  # the third sentence's padding
