"""Turning speech into text with a trained recogniser: batching utterances by frames, greedy
or beam search, and restoring the input order. Used by validation, `s2s evaluate` and
`s2s transcribe` alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from s2s.config import Config, DecodeConfig
from s2s.core.decoding import Decoder
from s2s.core.search import Hypothesis, batch_budget, search_batches
from s2s.data.batching import token_batches
from s2s.data.tokenizer import Tokenizer
from s2s.errors import S2SError
from s2s.kernels.packed_linear import ensure_eval_mode
from s2s.kernels.precision import decode_autocast, decoding_precision
from s2s.run.directory import RunDir
from s2s.run.evaluations import record_evaluation
from s2s.scores import Score
from s2s.tasks.combination import Combination, combine, load_fusion_lm, same_model
from s2s.tasks.loading import load_trained_run
from s2s.tasks.speech.audio import utterance_features
from s2s.tasks.speech.ctc_prefix import JointCTCDecoder
from s2s.tasks.speech.data import speech_collate, split_features
from s2s.tasks.speech.model import SpeechSeq2Seq
from s2s.tasks.speech.streaming import stream_transcripts
from s2s.tasks.task import EvaluationRequest, Task
from s2s.tasks.translation.metrics import speech_scores
from s2s.train.validation import greedy_scores


@dataclass
class Recognizer:
    model: SpeechSeq2Seq
    tokenizer: Tokenizer
    decode: DecodeConfig
    device: torch.device
    # an ensemble's other models, and a language model to fuse with its weight
    members: Sequence[SpeechSeq2Seq] = ()
    language_model: Decoder | None = None
    lm_weight: float = 0.0

    def __post_init__(self) -> None:
        self.autocast = decode_autocast(self.decode.amp, self.device)

    def search(
        self,
        features: Sequence[torch.Tensor],
        beam_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Hypothesis]:
        """The best hypothesis for each utterance's features, in input order. Output
        length is limited to ``max_length_ratio`` x frames + ``max_length_offset``."""
        ensure_eval_mode(self.model)
        results: list[Hypothesis] = [Hypothesis([], 0.0) for _ in features]
        if not features:
            return results
        lengths = [f.size(0) for f in features]
        budget = batch_budget(self.decode.batch_tokens, beam_size, max(lengths))
        model = self.decoder()
        searched = search_batches(
            model,
            token_batches(lengths, None, budget),
            lambda indices: speech_collate(indices, features),
            self.decode,
            self.device,
            beam_size,
            autocast=self.autocast,
        )
        for batch, beams in searched:
            found = [hyps[0] if hyps else Hypothesis([], 0.0) for hyps in beams]
            for index, hyp in zip(batch.indices, found, strict=True):
                results[index] = hyp
            if on_batch is not None:
                on_batch(len(batch.indices))
        return results

    def decoder(self) -> Decoder:
        """What search drives: each model (with its CTC prefix scores under
        decode.ctc_weight), the ensemble of them, fused with the language model."""
        weight = self.decode.ctc_weight
        models = [self.model, *self.members]
        decoders = [JointCTCDecoder(m, weight) if weight > 0 else m for m in models]
        return combine(decoders[0], decoders[1:], self.language_model, self.lm_weight)

    def combine_with(self, run: Path, combination: Combination, amp, overrides) -> None:
        """Decode with ``combination``'s other speech runs and language model, each
        checked to share this run's vocabulary."""
        for member in combination.members:
            _, theirs = load_speech_run(
                member, None, self.device.type, amp, decode_overrides=overrides
            )
            if not same_model(self.tokenizer, theirs.tokenizer):
                raise S2SError(
                    f"{member}: its vocabulary is not {run}'s: ensembles need runs trained "
                    "with one tokenizer (tokenizer.model)"
                )
            ensure_eval_mode(theirs.model)
            self.members = [*self.members, theirs.model]
        self.language_model = load_fusion_lm(combination, self.tokenizer, run, self.device)
        self.lm_weight = combination.lm_weight

    def greedy(self, features: Sequence[torch.Tensor]) -> list[str]:
        """The greedy transcript of each utterance, in input order (validation)."""
        return self.transcribe(features, beam_size=1)

    def transcribe(
        self,
        features: Sequence[torch.Tensor],
        beam_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[str]:
        """One transcript per utterance, in input order."""
        hyps = self.search(features, beam_size, on_batch)
        return [self.tokenizer.decode(h.tokens) for h in hyps]


def speech_log_scores(hypotheses: list[str], references: Sequence[str]) -> dict[str, float]:
    """``valid_wer`` and ``valid_cer`` (percent, rounded as the metrics log rounds them) of
    greedy transcripts: what training logs at each validation and `s2s average` reports."""
    scores = {s.name: s.score for s in speech_scores(hypotheses, list(references))}
    return {"valid_wer": round(scores["WER"], 2), "valid_cer": round(scores["CER"], 2)}


def load_speech_run(
    path: Path,
    checkpoint: Path | None = None,
    device: str = "auto",
    amp: str | None = None,
    *,
    cast_weights: bool = True,
    decode_overrides: Sequence[str] = (),
) -> tuple[Config, Recognizer]:
    """A speech run's config and its recogniser (model in eval mode on ``device``).
    ``decode_overrides`` and ``amp`` change the saved [decode] settings and the weights
    are stored in the decoding precision unless ``cast_weights`` is off, as
    `s2s.tasks.loading.load_run` does."""

    def require_speech(task: Task, config: Config) -> None:
        if not task.transcribes:
            raise S2SError(f"{path}: a {config.task.type} run; transcribing needs a speech run")

    config, tokenizers, model, torch_device = load_trained_run(
        path,
        checkpoint,
        device,
        amp,
        cast_weights=cast_weights,
        decode_overrides=decode_overrides,
        require=require_speech,
    )
    return config, Recognizer(model, tokenizers.tgt, config.decode, torch_device)


def evaluate_speech_run(run_dir: Path, request: EvaluationRequest) -> list[Score]:
    """Transcribe one split of the recipe and score it: WER, CER, exact-transcript accuracy;
    the request's ``amp`` and ``decode_overrides`` change the saved [decode] settings."""
    from s2s.progress import TaskProgress

    split, beam, output = request.split, request.beam, request.output
    checkpoint, decode_overrides = request.checkpoint, request.decode_overrides
    config, recognizer = load_speech_run(
        run_dir, checkpoint, request.device, request.amp, decode_overrides=decode_overrides
    )
    combination = Combination(tuple(request.ensemble), request.lm, request.lm_weight)
    recognizer.combine_with(run_dir, combination, request.amp, decode_overrides)
    if split not in config.data:
        known = ", ".join(sorted(config.data))
        raise S2SError(f"{run_dir}: the recipe has no split {split!r} (splits: {known})")
    manifest, features = split_features(
        config.data[split], split, config.audio, RunDir(run_dir).cache
    )
    beam = beam or config.decode.beam_size
    with TaskProgress(f"transcribing {split}", total=len(features)) as progress:
        hypotheses = recognizer.transcribe(features, beam, on_batch=progress.update)
    if output is not None:
        output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    scores = speech_scores(hypotheses, manifest.transcripts)
    used = checkpoint or RunDir(run_dir).default_checkpoint()
    precision = decoding_precision(config.decode.amp, recognizer.device)
    if not combination.active():  # an ensemble's or a fusion's score is not the run's own
        record_evaluation(run_dir, split, used, beam, scores, decode_overrides, precision)
    return scores


def score_speech_checkpoint(run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
    """Greedy valid WER and CER of a speech checkpoint, decoded as validation decodes."""
    config, recognizer = load_speech_run(run.path, checkpoint, device, cast_weights=False)
    manifest, features = split_features(config.data["valid"], "valid", config.audio, run.cache)
    references = manifest.transcripts
    return greedy_scores(recognizer, features, lambda h: speech_log_scores(h, references))


def transcribe_paths(
    recognizer: Recognizer,
    config: Config,
    paths: Iterable[str],
    beam_size: int,
    out: TextIO,
) -> int:
    """Write one transcript line per path, in order (a blank path gives an empty line);
    a missing or unreadable file stops with an error naming it, after the transcripts of
    the files before it (s2s.tasks.speech.streaming). Returns the number of lines written."""
    return stream_transcripts(
        lambda path: utterance_features(path, config.audio),
        lambda features: recognizer.transcribe(features, beam_size),
        paths,
        out,
    )
