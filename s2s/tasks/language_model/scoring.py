"""How well a language model predicts text: corpus perplexity (token- and word-level),
per-line log-probabilities for `s2s score`, and `s2s evaluate` on a split.

Word-level perplexity is exp(total NLL / number of words), words counted as the literature
counts them (`s2s.tasks.language_model.data.count_words`: whitespace-separated words plus
one end of line per line). With a word vocabulary it equals the token perplexity; with
subwords it is the number comparable to published word-level results. It scores one
segmentation of each word (the tokeniser's), so it can only overstate the perplexity,
never understate it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from s2s.data.batching import pad, token_batches
from s2s.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from s2s.errors import S2SError
from s2s.scores import Score
from s2s.tasks.language_model.data import (
    TokenStream,
    batchify,
    count_words,
    encode_lines,
    load_stream,
)
from s2s.tasks.language_model.loading import load_language_model
from s2s.tasks.language_model.model import LanguageModel

if TYPE_CHECKING:
    from s2s.run.directory import RunDir

# Tokens per forward pass when scoring. Without gradients the state is carried exactly, so
# this only trades memory for speed; it does not change the result.
SCORING_CHUNK = 256


@dataclass(frozen=True)
class Perplexity:
    """Summed negative log-likelihood (nats) over a text, with its token and word counts."""

    nll: float
    tokens: int
    words: int

    @property
    def token_ppl(self) -> float:
        return math.exp(min(self.nll / max(self.tokens, 1), 700.0))

    @property
    def word_ppl(self) -> float:
        return math.exp(min(self.nll / max(self.words, 1), 700.0))

    @property
    def log_prob(self) -> float:
        return -self.nll


@torch.inference_mode()
def stream_nll(
    model: LanguageModel,
    ids: torch.Tensor,
    streams: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[float, int]:
    """Summed NLL of a token stream read as ``streams`` parallel rows, and how many tokens
    it predicted. The first token of each row is context only (it has nothing before it)."""
    model.eval()
    grid = batchify(ids, streams).to(device)
    states = None
    total = 0.0
    for start in range(0, grid.size(1) - 1, SCORING_CHUNK):
        stop = min(start + SCORING_CHUNK, grid.size(1) - 1)
        with autocast():
            logits, states = model(grid[:, start:stop], states)
        targets = grid[:, start + 1 : stop + 1]
        total += float(
            F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        )
    return total, streams * (grid.size(1) - 1)


def stream_perplexity(
    model: LanguageModel,
    stream: TokenStream,
    streams: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Perplexity:
    """Perplexity of a split; the words are scaled by the share of tokens scored (the few
    tokens `batchify` drops and each row's first token), so word and token perplexity
    describe the same tokens."""
    nll, tokens = stream_nll(model, stream.ids, streams, device, autocast)
    words = round(stream.words * tokens / max(stream.tokens, 1))
    return Perplexity(nll, tokens, words)


@torch.inference_mode()
def score_lines(
    model: LanguageModel,
    tokenizer: Tokenizer,
    lines: list[str],
    word_level: bool,
    device: torch.device,
    batch_tokens: int = 4000,
) -> list[Perplexity]:
    """Each line scored on its own: the log-probability of its tokens and of the end of line
    that follows them, read after an end of line (as a line follows another in training)."""
    model.eval()
    encoded = encode_lines(tokenizer, lines, word_level)
    rows = [[EOS_ID, *ids, EOS_ID] for ids in encoded]  # context EOS, tokens, EOS to predict
    results: list[Perplexity | None] = [None] * len(lines)
    for batch in token_batches([len(r) for r in rows], None, batch_tokens):
        grid = pad([rows[i] for i in batch]).to(device)  # B x T, PAD after each row
        logits, _ = model(grid[:, :-1])
        targets = grid[:, 1:]
        nll = F.cross_entropy(
            logits.transpose(1, 2).float(), targets, ignore_index=PAD_ID, reduction="none"
        ).sum(1)
        for row, index in enumerate(batch):
            words = count_words([lines[index]])
            results[index] = Perplexity(float(nll[row]), len(rows[index]) - 1, words)
    return [r for r in results if r is not None]


def total(scores: list[Perplexity]) -> Perplexity:
    return Perplexity(
        sum(s.nll for s in scores), sum(s.tokens for s in scores), sum(s.words for s in scores)
    )


def perplexity_scores(result: Perplexity, subwords: bool) -> list[Score]:
    """`Score`s for printing and for the model card; word-level only when it differs."""
    signature = f"lm|tokens:{result.tokens}|words:{result.words}|eos:per-line|streams:1"
    scores = [Score("ppl", result.token_ppl, signature, f"perplexity = {result.token_ppl:.2f}")]
    if subwords:
        text = f"word-level perplexity = {result.word_ppl:.2f}"
        scores.append(Score("word_ppl", result.word_ppl, signature, text))
    return scores


def evaluate_language_model(
    run_dir: Path, split: str, checkpoint: Path | None, device: str
) -> list[Score]:
    """`s2s evaluate` for a language model: the perplexity of a split, read as one stream
    (one row, so every token but the first has its full history), recorded for `s2s info`."""
    from s2s.run.directory import RunDir
    from s2s.run.evaluations import record_evaluation

    config, tokenizer, model, torch_device = load_language_model(run_dir, checkpoint, device)
    if split not in config.data:
        known = ", ".join(sorted(config.data))
        raise S2SError(f"{run_dir}: the recipe has no split {split!r} (splits: {known})")
    stream = load_stream(config, split, tokenizer)
    result = stream_perplexity(model, stream, 1, torch_device)
    scores = perplexity_scores(result, config.tokenizer.model_type != "word")
    used = checkpoint or RunDir(run_dir).default_checkpoint()
    record_evaluation(run_dir, split, used, None, scores)
    return scores


def score_language_model_checkpoint(run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
    """Validation loss and perplexities of a language-model checkpoint, as its training
    scores them: the valid text read as ``train.streams`` rows, under train.amp."""
    from s2s.kernels.precision import autocast_factory, resolve_amp
    from s2s.train.validation import loss_scores

    config, tokenizer, model, torch_device = load_language_model(run.path, checkpoint, device)
    stream = load_stream(config, "valid", tokenizer)
    autocast = autocast_factory(resolve_amp(config.train.amp, torch_device), torch_device)
    result = stream_perplexity(model, stream, config.train.streams, torch_device, autocast)
    scores = loss_scores(result.nll / max(result.tokens, 1))
    if config.tokenizer.model_type != "word":
        scores["valid_word_ppl"] = round(result.word_ppl, 3)
    return scores


def score_rows(scores: list[Perplexity]) -> list[str]:
    """`s2s score` output: ``N<TAB>log-prob<TAB>ppl<TAB>tokens<TAB>words`` per input line
    (N from 1), then the same for ``total``. Log-probabilities are natural logs; ppl is the
    word-level perplexity exp(-log-prob / words) (equal to the token one for word models)."""

    def row(label: str, s: Perplexity) -> str:
        return f"{label}\t{s.log_prob:.4f}\t{s.word_ppl:.3f}\t{s.tokens}\t{s.words}"

    rows = [row(str(number), s) for number, s in enumerate(scores, start=1)]
    return [*rows, row("total", total(scores))]
