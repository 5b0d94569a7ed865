"""Training a speech recogniser (task.type = "speech"): the core training loop with speech's
data, model, batches (sized in feature frames), SpecAugment on training batches, the
attention + CTC loss, and WER / CER at validation."""

from __future__ import annotations

import json
import logging
import random

import torch

from s2s.atomic import atomic_write_bytes
from s2s.data.batching import Batch, token_batches
from s2s.data.tokenizer import EOS_ID, TokenizerPair, load_tokenizers, train_tokenizers
from s2s.errors import ConfigError, S2SError
from s2s.run.about import record_session_data
from s2s.tasks.registry import find_task
from s2s.tasks.speech.audio import check_speech_extra
from s2s.tasks.speech.data import SpeechSplit, speech_collate, split_features
from s2s.tasks.speech.model import SpeechSeq2Seq, ctc_loss_sum
from s2s.tasks.speech.specaugment import spec_augment, tempo_perturb
from s2s.tasks.speech.transcriber import Recognizer, speech_log_scores
from s2s.tasks.task import Task
from s2s.train.trainer import Trainer, label_smoothed_loss
from s2s.train.validation import greedy_scores

log = logging.getLogger("s2s.train")


def prepare_speech_tokenizer(trainer: Trainer, transcripts: list[str]) -> TokenizerPair:
    """Reuse the run's target tokeniser, or train one on the training transcripts (again
    when the recipe's [tokenizer] settings changed)."""
    config, run = trainer.config, trainer.run
    wanted = config.tokenizer.model_dump(mode="json")
    settings = run.path / "tokenizer.json"
    if (run.path / "spm.model").is_file() and settings.is_file():
        if json.loads(settings.read_text(encoding="utf-8")) == wanted:
            return load_tokenizers(run.path, joint=True)
        log.info("tokenizer settings changed: training a new tokenizer")
    tokenizers = train_tokenizers(config.tokenizer, [], transcripts, run.path)
    atomic_write_bytes(settings, json.dumps(wanted, indent=1).encode("utf-8"))
    return tokenizers


def joint_loss(
    model: SpeechSeq2Seq, batch: Batch, ctc_weight: float, smoothing: float
) -> torch.Tensor:
    """(1 - w) x summed smoothed cross-entropy of the decoder + w x summed CTC loss of the
    encoder: both are sums over the batch, which the training loop divides by its number of
    target tokens, so the two terms are on the same per-token scale."""
    if ctc_weight == 0:
        scores = model(batch.src, batch.src_lengths, batch.tgt_in)
        return label_smoothed_loss(scores, batch.tgt_out, smoothing)
    scores, log_probs, lengths = model.forward_with_ctc(batch.src, batch.src_lengths, batch.tgt_in)
    attention = label_smoothed_loss(scores, batch.tgt_out, smoothing)
    ctc = ctc_loss_sum(log_probs, lengths, batch.tgt_out, EOS_ID)
    return (1 - ctc_weight) * attention + ctc_weight * ctc


class SpeechTrainer(Trainer):
    """The `Trainer` loop with speech's hooks; ``train.max_tokens`` and
    ``train.max_length`` count feature frames (and target tokens)."""

    def _default_task(self) -> Task:
        """The recipe's task, from the registry (this trainer may serve several tasks)."""
        return find_task(self.config.task.type)

    def _prepare_data(self) -> None:
        config, run = self.config, self.run
        check_speech_extra()
        audio = config.audio
        manifest, features = split_features(config.data["train"], "train", audio, run.cache)
        self._set_feature_dim(features[0].size(1))
        self.tokenizers = prepare_speech_tokenizer(self, manifest.transcripts)
        encode = self.tokenizers.tgt.encode_batch
        self.train_data = SpeechSplit(features, encode(manifest.transcripts), manifest)
        manifest, features = split_features(config.data["valid"], "valid", audio, run.cache)
        width, train_width = features[0].size(1), self.train_data.src[0].size(1)
        if width != train_width:
            raise S2SError(f"data.valid: features are {width} wide, data.train's {train_width}")
        self.valid_data = SpeechSplit(features, encode(manifest.transcripts), manifest)
        limit = config.train.max_length
        self.train_indices = [
            i
            for i, (f, t) in enumerate(zip(self.train_data.src, self.train_data.tgt, strict=True))
            if f.size(0) <= limit and len(t) + 1 <= limit
        ]
        dropped = len(self.train_data.src) - len(self.train_indices)
        if dropped:
            log.info("dropped %d training utterances longer than %d frames", dropped, limit)
        if not self.train_indices:
            raise S2SError(f"train.max_length = {limit} leaves no training utterance")

    def _set_feature_dim(self, width: int) -> None:
        """Precomputed features: note their width in the config the run saves."""
        audio = self.config.audio
        if audio.features != "precomputed":
            return
        raw = width // (audio.deltas + 1)
        if audio.feature_dim and audio.feature_dim != raw:
            raise ConfigError(
                f"audio.feature_dim = {audio.feature_dim}, but data.train's features are {raw} wide"
            )
        audio.feature_dim = raw

    def _after_model(self) -> None:
        decode = self.config.decode
        self.recognizer = Recognizer(self.model, self.tokenizers.tgt, decode, self.device)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        frames = [self.train_data.src[i].size(0) for i in self.train_indices]
        tgt = [len(self.train_data.tgt[i]) + 1 for i in self.train_indices]
        rng = random.Random(self.config.train.seed * 100_003 + epoch)
        batches = token_batches(frames, tgt, self.config.train.max_tokens, rng)
        if epoch == 0:
            # SortaGrad (Amodei et al. 2016): short utterances first, so CTC learns to align
            # on easy examples before it meets long ones; shuffled from the second epoch on.
            batches.sort(key=lambda batch: max(frames[i] for i in batch))
        return [[self.train_indices[i] for i in batch] for batch in batches]

    def _collate(self, indices: list[int]) -> Batch:
        """A training batch, tempo-perturbed and SpecAugment-masked (validation batches
        never are)."""
        audio = self.config.audio
        masked = {
            i: spec_augment(tempo_perturb(self.train_data.src[i], audio.tempo_perturbation), audio)
            for i in indices
        }
        return speech_collate(indices, masked, self.train_data.tgt)

    def _batch_loss(self, batch: Batch) -> torch.Tensor:
        train = self.config.train
        with self.autocast():
            return joint_loss(self.model, batch, train.ctc_weight, train.label_smoothing)

    @torch.inference_mode()
    def validation_loss(self) -> tuple[float, int]:
        """Mean per-token cross-entropy (no smoothing) of the decoder on the valid split."""
        self.model.eval()
        data = self.valid_data
        frames = [f.size(0) for f in data.src]
        tgt = [len(t) + 1 for t in data.tgt]
        budget = max(self.config.train.max_tokens, max(frames), max(tgt))
        total, tokens = 0.0, 0
        for indices in token_batches(frames, tgt, budget):
            batch = speech_collate(indices, data.src, data.tgt).to(self.device)
            with self.autocast():
                scores = self.model(batch.src, batch.src_lengths, batch.tgt_in)
            total += float(label_smoothed_loss(scores, batch.tgt_out, smoothing=0.0))
            tokens += batch.num_tgt_tokens
        return total / max(tokens, 1), tokens

    def _decoded_scores(self) -> dict[str, float]:
        """Greedy WER and CER (percent) on the valid split."""
        references = self.valid_data.manifest.transcripts
        score = lambda h: speech_log_scores(h, references)  # noqa: E731
        return greedy_scores(self.recognizer, self.valid_data.src, score, self.autocast)

    def _record_session(self) -> None:
        """Note the session and the data sizes (utterances, frames) for `s2s info`."""
        data = {"train": split_size(self.train_data), "valid": split_size(self.valid_data)}
        data["train"]["used_utterances"] = len(self.train_indices)
        record_session_data(self.run, self.progress.step, data)


def split_size(data: SpeechSplit) -> dict[str, int]:
    return {
        "utterances": len(data.src),
        "frames": sum(f.size(0) for f in data.src),
        "tgt_tokens": sum(map(len, data.tgt)),
    }
