"""Sampling text from a language model: temperature, top-k and nucleus (top-p) filtering,
reproducible with a seed.

Filtering works on logits: what is filtered out becomes -inf, so the softmax spreads the
probability over what is left. Temperature 0 is greedy decoding (the most probable token).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.data.tokenizer import EOS_ID, UNK_ID, Tokenizer
from s2s.errors import S2SError
from s2s.tasks.language_model.data import encode_lines
from s2s.tasks.language_model.model import LanguageModel


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 50
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None

    def check(self) -> None:
        if self.max_tokens < 1:
            raise S2SError(f"--max-tokens must be at least 1, not {self.max_tokens}")
        if self.temperature < 0:
            raise S2SError(f"--temperature must be 0 (greedy) or more, not {self.temperature}")
        if self.top_k < 0:
            raise S2SError(f"--top-k must be 0 (off) or more, not {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise S2SError(f"--top-p must be in (0, 1], not {self.top_p}")


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


def next_tokens(logits: Tensor, options: SamplingOptions, generator: torch.Generator) -> Tensor:
    """Choose one token per row of logits [B, V]."""
    if options.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_top_k(logits / options.temperature, options.top_k)
    logits = filter_top_p(logits, options.top_p)
    probs = logits.float().softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate_ids(
    model: LanguageModel,
    context: list[int],
    options: SamplingOptions,
    device: torch.device,
) -> list[int]:
    """Continue ``context`` (ids, starting with the EOS a line follows) by at most
    ``max_tokens`` ids; stops after sampling EOS (the end of the line). Never samples
    ``<unk>``, which is not text."""
    options.check()
    generator = torch.Generator(device=device)
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(7), "big")
    generator.manual_seed(seed)
    model.eval()
    logits, states = model(torch.tensor([context], device=device))
    last = logits[:, -1].float()
    out: list[int] = []
    for _ in range(options.max_tokens):
        last[:, UNK_ID] = float("-inf")
        token = next_tokens(last, options, generator)
        out.append(int(token))
        if out[-1] == EOS_ID:
            break
        last, states = model.step(token, states)
    return out


def generate_text(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    word_level: bool,
    options: SamplingOptions,
    device: torch.device,
) -> tuple[str, int]:
    """The prompt followed by a sampled continuation (one line), and how many tokens were
    sampled (the final EOS, if sampled, included)."""
    if "\n" in prompt:
        raise S2SError("--prompt must be one line (a newline is an end of sentence)")
    ids = encode_lines(tokenizer, [prompt], word_level)[0]
    generated = generate_ids(model, [EOS_ID, *ids], options, device)
    text = tokenizer.decode(generated)
    pieces = tokenizer.pieces([i for i in generated if i != EOS_ID][:1])
    glue = " " if pieces and pieces[0].startswith("\u2581") else ""
    if not prompt.strip():
        return text, len(generated)
    return prompt.rstrip() + glue + text if text else prompt.rstrip(), len(generated)
