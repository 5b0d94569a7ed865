"""What every search strategy returns, and the output length limit they all respect."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from s2s.data.tokenizer import EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # sum of log-probabilities (EOS included) / length penalty


def max_output_lengths(src_lengths: Tensor, ratio: float, offset: int) -> Tensor:
    """Per-sentence limit on output tokens (EOS not counted): ratio * source length + offset.
    At its limit a sentence may only end, so it gets the same output alone or in a batch."""
    return (src_lengths.float() * ratio).floor().long() + offset


def strip_tokens(tokens: list[int]) -> list[int]:
    """Cut at the first EOS and drop padding."""
    out = []
    for token in tokens:
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out
