"""Training a language model: the core training loop (`s2s.train.trainer.Trainer`) over TBPTT
windows of a contiguous token stream, with the hidden state carried across batches.

The training text is cut into ``train.streams`` contiguous rows; batch k holds columns
[k * bptt, (k + 1) * bptt) of every row, so row b of batch k+1 continues row b of batch k.
The final state of batch k, detached from its graph, starts batch k+1: gradients stop at
the window's edge while the state keeps the whole history. Each epoch starts from zeros.
A resumed run restarts the state at zero at the batch it resumes from (the state is not
saved in checkpoints); the difference fades within a few windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.data.tokenizer import TokenizerPair
from s2s.run.about import record_session_data
from s2s.tasks.language_model.data import (
    StreamBatch,
    TokenStream,
    batchify,
    load_stream,
    prepare_lm_tokenizer,
    window,
    window_count,
)
from s2s.tasks.language_model.model import LayerStates, detach_states
from s2s.tasks.language_model.scoring import Perplexity, stream_perplexity
from s2s.tasks.registry import find_task
from s2s.tasks.task import Task
from s2s.train.trainer import Trainer


def stream_summary(stream: TokenStream) -> dict[str, int]:
    return {"lines": stream.lines, "tokens": stream.tokens, "words": stream.words}


class LanguageModelTrainer(Trainer):
    """`Trainer` with the language-model task hooks."""

    def _default_task(self) -> Task:
        """The recipe's task, from the registry (this trainer may serve several tasks)."""
        return find_task(self.config.task.type)

    def _prepare_data(self) -> None:
        config = self.config
        tokenizer = prepare_lm_tokenizer(config, self.run)
        self.tokenizers = TokenizerPair(tokenizer, tokenizer)
        self.train_stream = load_stream(config, "train", tokenizer)
        self.valid_stream = load_stream(config, "valid", tokenizer)
        self.train_grid = batchify(self.train_stream.ids, config.train.streams)
        self.train_states: LayerStates | None = None
        self.last_valid: Perplexity | None = None

    def _after_model(self) -> None:
        """Nothing to decode at validation: a language model is judged by its perplexity."""

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """Window numbers in text order (every epoch the same: the order *is* the data)."""
        return [[k] for k in range(window_count(self.train_grid, self.config.train.bptt))]

    def _collate(self, indices: list[int]) -> StreamBatch:
        return window(self.train_grid, indices[0], self.config.train.bptt)

    def _batch_loss(self, batch: StreamBatch) -> torch.Tensor:  # type: ignore[override]
        """Summed cross-entropy of one window, starting from the previous window's final
        state (zeros at the start of an epoch, or of a resumed session)."""
        states = None if batch.index == 0 else self.train_states
        with self.autocast():
            logits, finals = self.model(batch.inputs, states)
        self.train_states = detach_states(finals)
        return F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.targets.flatten(),
            label_smoothing=self.config.train.label_smoothing,
            reduction="sum",
        )

    @torch.inference_mode()
    def validation_loss(self) -> tuple[float, int]:
        """Mean per-token NLL of the validation text, read as ``train.streams`` rows."""
        result = stream_perplexity(
            self.model, self.valid_stream, self.config.train.streams, self.device, self.autocast
        )
        self.last_valid = result
        return result.nll / max(result.tokens, 1), result.tokens

    def _loss_scores(self) -> dict[str, float]:
        """Word-level perplexity, when subwords make it differ from the token one."""
        if self.last_valid is None or self.config.tokenizer.model_type == "word":
            return {}
        return {"valid_word_ppl": round(self.last_valid.word_ppl, 3)}

    def _record_session(self) -> None:
        data = {
            "train": stream_summary(self.train_stream),
            "valid": stream_summary(self.valid_stream),
        }
        record_session_data(self.run, self.progress.step, data)
