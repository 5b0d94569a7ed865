"""The text side of a language model, without torch: prompts into token ids and a sampled
continuation back into one line. Shared by `s2s generate` on a run and on an exported
model (s2s.exported, which imports no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from s2s.data.tokenizer import EOS_ID, UNK_ID, Tokenizer
from s2s.errors import S2SError


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 50
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None
    beam: int = 0  # 0: sample; k: beam search of width k for the likeliest continuation
    length_penalty: float = 1.0  # beam search: alpha of ((5 + length) / 6) ** alpha

    def check(self) -> None:
        if self.beam < 0:
            raise S2SError(f"--beam must be 0 (sample) or more, not {self.beam}")
        if self.max_tokens < 1:
            raise S2SError(f"--max-tokens must be at least 1, not {self.max_tokens}")
        if self.temperature < 0:
            raise S2SError(f"--temperature must be 0 (greedy) or more, not {self.temperature}")
        if self.top_k < 0:
            raise S2SError(f"--top-k must be 0 (off) or more, not {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise S2SError(f"--top-p must be in (0, 1], not {self.top_p}")


def encode_lines(tokenizer: Tokenizer, lines: list[str], word_level: bool) -> list[list[int]]:
    """Token ids of each line, without EOS.

    A word vocabulary encodes word by word: sentencepiece would merge a run of unknown words
    (PTB's ``<unk> <unk>``) into one unknown token, and the stream must keep one token per
    word for its perplexity to be the word-level one the literature reports.
    """
    if not word_level:
        return tokenizer.encode_batch(lines)
    words = [line.split() for line in lines]
    flat = tokenizer.encode_batch([w for line in words for w in line])
    out, start = [], 0
    for line in words:
        out.append([t for ids in flat[start : start + len(line)] for t in ids or [UNK_ID]])
        start += len(line)
    return out


def prompt_context(tokenizer: Tokenizer, prompt: str, word_level: bool) -> list[int]:
    """The ids a continuation of ``prompt`` follows: the EOS a line follows, then the prompt."""
    if "\n" in prompt:
        raise S2SError("--prompt must be one line (a newline is an end of sentence)")
    return [EOS_ID, *encode_lines(tokenizer, [prompt], word_level)[0]]


def continuation_text(tokenizer: Tokenizer, prompt: str, generated: list[int]) -> str:
    """The prompt followed by the generated ids as text (one line)."""
    text = tokenizer.decode(generated)
    pieces = tokenizer.pieces([i for i in generated if i != EOS_ID][:1])
    glue = " " if pieces and pieces[0].startswith("\u2581") else ""
    if not prompt.strip():
        return text
    return prompt.rstrip() + glue + text if text else prompt.rstrip()
