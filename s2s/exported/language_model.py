"""`s2s generate` on an exported language model: the prompt read token by token through
the step graph from zero states, then greedy choice or sampling in numpy, as
`s2s.core.search.Sampling` chooses (temperature, top-k, top-p). Greedy choice
(temperature 0) gives the run's tokens; a sample draws from numpy's generator, so a seed
gives another sample than on the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2s.data.tokenizer import EOS_ID, Tokenizer
from s2s.errors import S2SError
from s2s.exported.decoder import open_session
from s2s.exported.files import DECODER_ONLY, STEP_FILE, read_export_config
from s2s.tasks.language_model.text import (
    SamplingOptions,
    continuation_text,
    prompt_context,
)


def filtered_probabilities(log_probs: np.ndarray, options: SamplingOptions) -> np.ndarray:
    """The distribution [V] to sample from: tempered, cut to the top k and the nucleus."""
    logits = log_probs.astype(np.float64) / options.temperature
    if 0 < options.top_k < logits.size:
        kth = np.partition(logits, -options.top_k)[-options.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    if options.top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probs = np.exp(logits[order] - logits[order[0]])
        probs /= probs.sum()
        before = np.cumsum(probs) - probs  # mass of the tokens ranked above each one
        logits[order[before >= options.top_p]] = -np.inf
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


class ExportedLanguageModel:
    """An exported language model's tokeniser and step graph."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.config = read_export_config(folder)
        if self.config.graphs != DECODER_ONLY:
            raise S2SError(f"{folder}: an exported {self.config.task} model, not a language model")
        self.tokenizer = Tokenizer(folder / self.config.src_tokenizer)
        self.session = open_session(folder / STEP_FILE, threads)

    def step(self, token: int, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One token -> (log-probabilities [V], the new states)."""
        feeds = {"prev_tokens": np.array([token], dtype=np.int64)}
        feeds |= {f"state.{i}": state for i, state in enumerate(states)}
        log_probs, *states = self.session.run(None, feeds)
        return log_probs[0], states

    def generate_ids(self, context: list[int], options: SamplingOptions) -> list[int]:
        """At most ``max_tokens`` ids after ``context``, EOS last if the line ended."""
        states = [np.zeros((1, *shape), dtype=np.float32) for shape in self.config.state_shapes]
        for token in context:
            log_probs, states = self.step(token, states)
        rng = np.random.default_rng(options.seed)
        generated: list[int] = []
        while len(generated) < options.max_tokens:
            if options.temperature == 0:
                token = int(log_probs.argmax())
            else:
                probs = filtered_probabilities(log_probs, options)
                token = int((probs / rng.exponential(size=probs.size)).argmax())
            generated.append(token)
            if token == EOS_ID:
                break
            log_probs, states = self.step(token, states)
        return generated

    def generate(self, prompt: str, options: SamplingOptions) -> str:
        """The prompt followed by its continuation, one line (as `s2s generate` prints)."""
        options.check()
        context = prompt_context(self.tokenizer, prompt, self.config.word_level)
        return continuation_text(self.tokenizer, prompt, self.generate_ids(context, options))
