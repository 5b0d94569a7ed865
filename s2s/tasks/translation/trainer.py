"""Training an attention encoder-decoder on text pairs (translation, and summarisation,
which subclasses it): the `Trainer` loop with text data, token-budget batches, smoothed
cross-entropy, and greedy decoding scored by the task's metric at validation."""

from __future__ import annotations

import json
import logging
import random

import torch

from s2s.atomic import atomic_write_bytes
from s2s.config import Config, SplitConfig
from s2s.data.batching import Batch, collate, token_batches
from s2s.data.corpus import ParallelText, TokenizedSplit, load_parallel, tokenize_split
from s2s.data.tokenizer import TokenizerPair, load_tokenizers, tokenizer_files, train_tokenizers
from s2s.errors import S2SError
from s2s.run.about import record_session
from s2s.run.directory import RunDir
from s2s.tasks.registry import find_task
from s2s.tasks.task import Task
from s2s.tasks.translation.translator import Translator
from s2s.train.trainer import Trainer, label_smoothed_loss
from s2s.train.validation import corpus_loss, greedy_scores

log = logging.getLogger("s2s.train")


def prepare_tokenizers(config: Config, run: RunDir) -> TokenizerPair:
    """Reuse the run's tokeniser, or train one from the training split (again when the
    recipe's [tokenizer] settings differ from those it was trained with: `--restart`)."""
    files = set(tokenizer_files(run.path, config.tokenizer.joint))
    wanted = config.tokenizer.model_dump(mode="json")
    settings = run.path / "tokenizer.json"
    if all(f.is_file() for f in files):
        # A run from before tokenizer.json was written: its tokeniser is taken as it is.
        saved = json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else wanted
        if saved == wanted:
            return load_tokenizers(run.path, config.tokenizer.joint)
        changed = sorted(k for k in wanted.keys() | saved.keys() if wanted.get(k) != saved.get(k))
        log.info("tokenizer settings changed (%s): training a new tokenizer", ", ".join(changed))
    text = load_parallel(config.data["train"], "train")
    require_text(config.data["train"], text)
    tokenizers = train_tokenizers(config.tokenizer, text.src, text.tgt, run.path)
    atomic_write_bytes(settings, json.dumps(wanted, indent=1).encode("utf-8"))
    return tokenizers


def require_text(split: SplitConfig, text: ParallelText) -> None:
    """Refuse a training split with a side of only blank lines before the tokeniser is
    trained on it (sentencepiece would stop with an internal message, or the model would
    learn to translate into nothing)."""
    empty = [
        _side_name(split, side)
        for side, lines in (("src", text.src), ("tgt", text.tgt))
        if not any(line.strip() for line in lines)
    ]
    if empty:
        verb = "hold" if len(empty) > 1 else "holds"
        raise S2SError(
            f"{' and '.join(empty)} {verb} no text (only blank lines): "
            "nothing to train the tokenizer on"
        )


def _side_name(split: SplitConfig, side: str) -> str:
    """Where one side of the training split comes from, for an error message."""
    file = split.src if side == "src" else split.tgt
    if isinstance(file, list):  # several references: the tokenizer trains on the first
        file = file[0]
    if file is not None:
        return f"data.train.{side} ({file})"
    if split.path is not None:
        return f"data.train.{side}_field {getattr(split, f'{side}_field')!r} of {split.path}"
    return f"data.train ({side} of hub dataset {split.hub!r})"


def truncate_sources(split: TokenizedSplit, max_source_length: int) -> None:
    """Cut sources to the ``model.max_source_length`` tokens the encoder reads, so length
    filtering and batch budgets count the tokens actually used. (The EOS collate appends
    to a cut source is then cut by the model, as it is in search: the same input both ways.)"""
    if max_source_length:
        limit = max_source_length
        split.src = [ids if len(ids) <= limit else ids[:limit] for ids in split.src]


def filter_long(split: TokenizedSplit, max_length: int) -> list[int]:
    """Indices of pairs that fit ``max_length`` tokens (EOS/BOS included) on both sides."""
    keep = [
        i
        for i, (s, t) in enumerate(zip(split.src, split.tgt, strict=True))
        if len(s) + 1 <= max_length and len(t) + 1 <= max_length
    ]
    dropped = len(split.src) - len(keep)
    if dropped:
        log.info(
            "dropped %d of %d training pairs longer than %d tokens",
            dropped,
            len(split.src),
            max_length,
        )
    if not keep:
        raise S2SError(f"train.max_length = {max_length} leaves no training pair")
    return keep


class TranslationTrainer(Trainer):
    """The `Trainer` loop with the text-to-text hooks; validation decodes greedily and
    scores with the task's `validation_scores` (BLEU for translation)."""

    def _default_task(self) -> Task:
        """The recipe's task, from the registry (this trainer may serve several tasks)."""
        return find_task(self.config.task.type)

    def _prepare_data(self) -> None:
        """Set the tokenisers and the tokenised train and valid splits."""
        config, run = self.config, self.run
        self.tokenizers = prepare_tokenizers(config, run)
        self.train_data = tokenize_split(config.data["train"], "train", self.tokenizers, run.cache)
        self.valid_data = tokenize_split(config.data["valid"], "valid", self.tokenizers, run.cache)
        for data in (self.train_data, self.valid_data):  # the encoder reads no further
            truncate_sources(data, config.model.max_source_length)
        self.train_indices = filter_long(self.train_data, config.train.max_length)

    def _after_model(self) -> None:
        """Objects that need the model on its device (the validation decoder)."""
        self.translator = Translator(self.model, self.tokenizers, self.config.decode, self.device)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This epoch's batches (deterministic in seed and epoch, so resume can rebuild them)."""
        src = [len(self.train_data.src[i]) + 1 for i in self.train_indices]
        tgt = [len(self.train_data.tgt[i]) + 1 for i in self.train_indices]
        rng = random.Random(self.config.train.seed * 100_003 + epoch)
        batches = token_batches(src, tgt, self.config.train.max_tokens, rng)
        return [[self.train_indices[i] for i in batch] for batch in batches]

    def _collate(self, indices: list[int]) -> Batch:
        """The batch of training examples ``indices`` (on the CPU)."""
        return collate(indices, self.train_data.src, self.train_data.tgt)

    def _batch_loss(self, batch: Batch) -> torch.Tensor:
        """Summed training loss of one batch already on the device (smoothed cross-entropy);
        its normaliser is ``batch.num_tgt_tokens``."""
        with self.autocast():
            logits = self.train_model(batch.src, batch.src_lengths, batch.tgt_in)
        return label_smoothed_loss(logits, batch.tgt_out, self.config.train.label_smoothing)

    def _decoded_scores(self) -> dict[str, float]:
        """The task's scores of the valid split decoded greedily, rounded for the log."""
        raw = self.valid_data.raw
        score = self.task.decoded_scores  # type: ignore[attr-defined]
        metric = self.config.train.early_stopping_metric
        return greedy_scores(
            self.translator, self.valid_data.src, lambda h: score(h, raw, metric), self.autocast
        )

    def _record_session(self) -> None:
        """Note the session and the data sizes in the run's about.json (for `s2s info`)."""
        used = len(self.train_indices)
        record_session(self.run, self.progress.step, self.train_data, self.valid_data, used)

    @torch.inference_mode()
    def validation_loss(self) -> tuple[float, int]:
        """Mean per-token cross-entropy (no smoothing) on the validation split; under DDP
        each rank scores every world_size-th pair and the sums are added up."""
        max_tokens = self.config.train.max_tokens
        data = self.valid_data
        if self.dist.world_size == 1:
            return corpus_loss(self.model, data, max_tokens, self.device, self.autocast)
        data = TokenizedSplit(self.dist.shard(data.src), self.dist.shard(data.tgt), data.raw)
        loss, tokens = 0.0, 0
        if data.src:
            loss, tokens = corpus_loss(self.model, data, max_tokens, self.device, self.autocast)
        total, count = self.dist.sum_floats([loss * tokens, tokens])
        return total / max(count, 1), int(count)
