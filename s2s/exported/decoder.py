"""The exported graphs behind the decoder-step protocol that the numpy search drives.

A `NumpyState` mirrors `s2s.core.decoding.SearchState`: ``hypotheses`` (the feed vector and
the flattened cell states) has one row per hypothesis and follows them; ``sentences`` (the
encoder's memory, keys, mask and the source ids) has one row per sentence, read in place by
that sentence's consecutive hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from s2s.errors import S2SError
from s2s.exported.files import ENCODER_FILE, STEP_FILE, ExportConfig, bucket_file

SENTENCE_NAMES = ("memory", "keys", "src_mask", "src_ids")


@dataclass
class NumpyState:
    hypotheses: list[np.ndarray]  # feed, state.0, state.1, ...: one row per hypothesis
    sentences: list[np.ndarray]  # memory, keys, src_mask, src_ids: one row per sentence

    def select_hypotheses(self, rows: np.ndarray) -> NumpyState:
        """Hypothesis rows ``rows`` (reordered, repeated or dropped)."""
        return NumpyState([value[rows] for value in self.hypotheses], self.sentences)

    def keep_sentences(self, sentences: np.ndarray, rows: np.ndarray) -> NumpyState:
        """Only the sentences ``sentences`` and their hypothesis rows ``rows``."""
        return NumpyState(
            [value[rows] for value in self.hypotheses],
            [value[sentences] for value in self.sentences],
        )


def open_session(path: Path, threads: int | None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session; a missing or broken graph is one line naming the file."""
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        reason = str(error).strip().splitlines()[0]
        raise S2SError(f"{path}: cannot load the ONNX graph: {reason}") from None


class ExportedDecoder:
    """Encoder and step sessions of an exported directory, speaking the search protocol."""

    def __init__(self, folder: Path, config: ExportConfig, threads: int | None = None) -> None:
        self.config = config
        self.buckets = config.encoder_buckets
        names = [bucket_file(n) for n in self.buckets] if self.buckets else [ENCODER_FILE]
        self.encoders = [open_session(folder / name, threads) for name in names]
        self.step_session = open_session(folder / STEP_FILE, threads)
        self.step_inputs = [i.name for i in self.step_session.get_inputs()]

    def _encoder_for(self, src: np.ndarray) -> tuple[onnxruntime.InferenceSession, np.ndarray]:
        """The encoder graph for this batch, and the batch padded to its length (buckets)."""
        if not self.buckets:
            return self.encoders[0], src
        index = next((i for i, n in enumerate(self.buckets) if n >= src.shape[1]), None)
        if index is None:  # longer than the last bucket: cut to it, as max_source_length does
            index, src = len(self.buckets) - 1, src[:, : self.buckets[-1]]
        padding = self.buckets[index] - src.shape[1]
        return self.encoders[index], np.pad(src, ((0, 0), (0, padding)))

    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> NumpyState:
        """Encode src [B, S] (padded, int64) with lengths [B]: the state before the first token."""
        limit = self.config.max_source_length
        if limit and src.shape[1] > limit:
            src, src_lengths = src[:, :limit], np.minimum(src_lengths, limit)
        session, src = self._encoder_for(src)
        src_lengths = np.minimum(src_lengths, src.shape[1])
        memory, keys, src_mask, feed, *states = session.run(
            None, {"src": src, "src_lengths": src_lengths}
        )
        return NumpyState([feed, *states], [memory, keys, src_mask, src])

    def step(self, tokens: np.ndarray, state: NumpyState) -> tuple[np.ndarray, NumpyState]:
        """Previous tokens [N] -> (log-probabilities [N, V] float32, the new state)."""
        feed, *states = state.hypotheses
        values = dict(zip(SENTENCE_NAMES, state.sentences, strict=True))
        values |= {"prev_tokens": tokens, "feed": feed}
        values |= {f"state.{i}": value for i, value in enumerate(states)}
        log_probs, *hypotheses = self.step_session.run(
            None, {name: values[name] for name in self.step_inputs}
        )
        return log_probs, NumpyState(hypotheses, state.sentences)
