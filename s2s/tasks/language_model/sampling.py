"""Sampling text from a language model: the options of `s2s generate`, and the prompt and
its continuation as text. The sampling itself (temperature, top-k, top-p, seed) is the
search strategy `s2s.core.search.Sampling`, and ``beam`` the strategy `BeamSearch`, over the
model's `LanguageModelDecoder`.
"""

from __future__ import annotations

import torch

from s2s.core.search import BeamSearch, Sampling
from s2s.data.tokenizer import EOS_ID, Tokenizer
from s2s.tasks.language_model.decoder import LanguageModelDecoder
from s2s.tasks.language_model.model import LanguageModel

# SamplingOptions lives apart from torch (an exported model samples with it too)
from s2s.tasks.language_model.text import SamplingOptions as SamplingOptions
from s2s.tasks.language_model.text import continuation_text, prompt_context


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
    strategy: BeamSearch | Sampling
    if options.beam:  # the likeliest continuation, as a translation is searched
        strategy = BeamSearch(options.beam, alpha=options.length_penalty)
    else:
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
    generated = generate_ids(model, prompt_context(tokenizer, prompt, word_level), options, device)
    return continuation_text(tokenizer, prompt, generated), len(generated)
