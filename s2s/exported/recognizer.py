"""Transcribing audio with an exported speech recogniser: features in numpy
(s2s.tasks.speech.features), batched by frames and token budget as `s2s transcribe`
batches them, the encoder and step graphs on onnxruntime, and greedy or beam search in
numpy, joint with the CTC prefix scores under decode.ctc_weight (s2s.exported.ctc)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime

from s2s.config import AudioConfig
from s2s.data.length_batches import token_batches
from s2s.data.tokenizer import PAD_ID, Tokenizer
from s2s.errors import S2SError
from s2s.exported.beam import NumpyBeamSearch
from s2s.exported.ctc import JointCTCDecoder
from s2s.exported.decoder import ExportedDecoder, NumpyState
from s2s.exported.files import ExportConfig, read_export_config
from s2s.exported.search import Hypothesis, StepDecoder, greedy_search, max_output_lengths
from s2s.exported.translator import batch_budget
from s2s.tasks.speech.features import feature_array


def padded_features(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[B, T, width] zero-padded float32 features and their lengths [B] (int64)."""
    lengths = np.array([f.shape[0] for f in features], dtype=np.int64)
    out = np.zeros((len(features), int(lengths.max()), features[0].shape[1]), dtype=np.float32)
    for row, f in enumerate(features):
        out[row, : f.shape[0]] = f
    return out, lengths


class SpeechDecoder(ExportedDecoder):
    """The exported graphs over features: the encoder reads [B, T, F] frames and, with a
    CTC head, also gives the CTC log-probabilities; the step graph is the text model's."""

    def __init__(self, folder: Path, config: ExportConfig, threads: int | None = None) -> None:
        super().__init__(folder, config, threads)
        self.output_names = [o.name for o in self.encoders[0].get_outputs()]

    def encode(
        self, features: np.ndarray, lengths: np.ndarray
    ) -> tuple[NumpyState, np.ndarray, np.ndarray]:
        """The state before the first token, and the CTC log-probabilities [B, T', V] and
        their lengths [B] (empty when the model has no CTC head)."""
        session, features = self._encoder_for(features)
        values = session.run(None, {"features": features, "feature_lengths": lengths})
        named = dict(zip(self.output_names, values, strict=True))
        if self.buckets:  # padded to the bucket: back to the batch's own encoder frames
            frames = int(named["src_mask"].sum(axis=1).max())
            for name in ("memory", "keys", "src_mask", "ctc_log_probs"):
                if name in named:
                    named[name] = named[name][:, :frames]
        states = [named[f"state.{i}"] for i in range(self.config.state_count)]
        src_ids = np.full(named["src_mask"].shape, PAD_ID, dtype=np.int64)  # no copying
        sentences = [named["memory"], named["keys"], named["src_mask"], src_ids]
        empty = np.zeros(0, dtype=np.float32)
        ctc = named.get("ctc_log_probs", empty), named.get("ctc_lengths", empty)
        return NumpyState([named["feed"], *states], sentences), *ctc

    def _encoder_for(self, features: np.ndarray) -> tuple[onnxruntime.InferenceSession, np.ndarray]:
        """The encoder graph for this batch, and the features padded to its frame count
        (per-length graphs; `ExportedRecognizer.features` refuses longer utterances)."""
        if not self.buckets:
            return self.encoders[0], features
        index = next(i for i, n in enumerate(self.buckets) if n >= features.shape[1])
        padding = self.buckets[index] - features.shape[1]
        return self.encoders[index], np.pad(features, ((0, 0), (0, padding), (0, 0)))

    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> NumpyState:
        """Encode features [B, T, F] with lengths [B] (frames)."""
        return self.encode(src, src_lengths)[0]


class ExportedRecognizer:
    """An exported speech directory's tokeniser, audio settings, graphs and decode settings."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.config = read_export_config(folder)
        if self.config.audio is None:
            raise S2SError(f"{folder}: an exported {self.config.task} model, not a speech model")
        self.audio: AudioConfig = self.config.audio
        self.decode = self.config.decode
        self.tokenizer = Tokenizer(folder / self.config.tgt_tokenizer)
        self.decoder = SpeechDecoder(folder, self.config, threads)

    def features(self, path: Path) -> np.ndarray:
        """One file's features, as the run computes them (to float32 rounding)."""
        features = feature_array(path, self.audio)
        buckets = self.config.encoder_buckets
        if buckets and features.shape[0] > buckets[-1]:
            raise S2SError(
                f"{path}: {features.shape[0]} frames, more than the {buckets[-1]} that this "
                f"exported encoder ({self.config.cells['encoder']}, exported per length up "
                "to train.max_length) takes"
            )
        return features

    def step_decoder(self) -> StepDecoder:
        """The graphs, joint with CTC under decode.ctc_weight."""
        weight = self.decode.ctc_weight
        if weight > 0 and self.config.ctc:
            return JointCTCDecoder(self.decoder, weight, self.tokenizer.vocab_size)
        return self.decoder

    def search(self, features: np.ndarray, lengths: np.ndarray, beam_size: int) -> list:
        """Each utterance's n-best list for one padded batch."""
        decode = self.decode
        limits = max_output_lengths(lengths, decode.max_length_ratio, decode.max_length_offset)
        decoder = self.step_decoder()
        if beam_size == 1:
            return greedy_search(decoder, features, lengths, limits)
        beam = NumpyBeamSearch(beam_size, decode.length_penalty, 1, decode.stopping)
        return beam.search(decoder, features, lengths, limits)

    def hypotheses(self, features: Sequence[np.ndarray], beam_size: int) -> list[Hypothesis]:
        """The best hypothesis for each utterance's features, in input order."""
        results: list[Hypothesis] = [Hypothesis([], 0.0) for _ in features]
        if not features:
            return results
        lengths = [f.shape[0] for f in features]
        budget = batch_budget(self.decode.batch_tokens, beam_size, max(lengths))
        for indices in token_batches(lengths, None, budget):
            batch, batch_lengths = padded_features([features[i] for i in indices])
            found = self.search(batch, batch_lengths, beam_size)
            for index, hyps in zip(indices, found, strict=True):
                results[index] = hyps[0] if hyps else Hypothesis([], 0.0)
        return results

    def transcribe(self, features: Sequence[np.ndarray], beam_size: int) -> list[str]:
        """One transcript per utterance's features, in input order."""
        return [self.tokenizer.decode(h.tokens) for h in self.hypotheses(features, beam_size)]
