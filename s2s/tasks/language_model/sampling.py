"""Sampling text from a language model: the options of `s2s generate`, and the prompt and
its continuation as text. The sampling itself (temperature, top-k, top-p, seed) is the
search strategy `s2s.core.search.Sampling`, over the model's `LanguageModelDecoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s2s.core.search import Sampling
from s2s.data.tokenizer import EOS_ID, Tokenizer
from s2s.errors import S2SError
from s2s.tasks.language_model.data import encode_lines
from s2s.tasks.language_model.decoder import LanguageModelDecoder
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
    model.eval()
    prompt = torch.tensor([context], device=device)
    strategy = Sampling(options.temperature, options.top_k, options.top_p, options.seed)
    # At its limit a hypothesis may only end: with a limit of max_tokens, a continuation
    # that holds max_tokens tokens sampled none of them as EOS, and keeps none.
    limit = torch.tensor([options.max_tokens], device=device)
    lengths = torch.tensor([len(context)], device=device)
    [[found]] = strategy.search(LanguageModelDecoder(model), prompt, lengths, limit)
    ended = len(found.tokens) < options.max_tokens
    return [*found.tokens, EOS_ID] if ended else found.tokens


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
