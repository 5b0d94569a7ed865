"""The encoder graph of a speech run: acoustic features in, everything the decoder-step
graph reads out (the step graph is the text model's, s2s.export.graphs), and, when the run
has a CTC head, the CTC log-probabilities over the encoder frames that joint CTC/attention
decoding scores prefixes with (s2s.exported.ctc). As for text, an encoder whose cells loop
over time in Python is exported once per length, here in feature frames."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from s2s.errors import S2SError
from s2s.export.graphs import SENTENCE_TENSORS, flatten_states, state_names
from s2s.export.tracing import graph_matches, trace_onnx
from s2s.exported.files import ENCODER_FILE, bucket_file
from s2s.tasks.speech.model import SpeechSeq2Seq

SPEECH_INPUTS = ["features", "feature_lengths"]
CTC_OUTPUTS = ["ctc_log_probs", "ctc_lengths"]
TRACE_FRAMES = (41, 23)  # the example batch the encoder is traced on, in feature frames
PROBE_FRAMES = (57, 30, 9)  # another batch size and length, to check the trace
# frame counts of per-length encoder graphs (cells that loop over time in Python); the last
# is train.max_length, the longest utterance the run was trained on
FRAME_BUCKETS = (128, 256, 512, 1024, 2048)


def example_features(width: int, frames: tuple[int, ...], length: int = 0) -> tuple[Tensor, Tensor]:
    """Random features [B, T, ``width``] (T = ``length`` or the longest; zero beyond each
    utterance, as batches are padded) and the lengths [B]: a speech source batch."""
    generator = torch.Generator().manual_seed(len(frames))
    features = torch.zeros(len(frames), max(length, *frames), width)
    for row, n in enumerate(frames):
        features[row, :n] = torch.randn(n, width, generator=generator)
    return features, torch.tensor(frames)


class SpeechEncoderGraph(nn.Module):
    """features [B, T, F], feature_lengths [B] -> memory, keys, src_mask, feed, state.0 ...
    and, with a CTC head, ctc_log_probs [B, T', V] (fp32) and ctc_lengths [B]."""

    def __init__(self, model: SpeechSeq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, feature_lengths: Tensor) -> tuple[Tensor, ...]:
        ctc: tuple[Tensor, ...] = ()
        if self.model.ctc_head is None:
            encoded = self.model.encode(features, feature_lengths)
        else:
            encoded, log_probs, lengths = self.model.encode_with_ctc(features, feature_lengths)
            ctc = (log_probs.transpose(0, 1), lengths)
        states, feed = self.model.initial_state(encoded)
        return (encoded.memory, encoded.keys, encoded.src_mask, feed, *flatten_states(states), *ctc)


def encoder_axes(state_count: int, ctc: list[str]) -> tuple[list[str], dict]:
    """The encoder graph's output names and the dynamic axes of its inputs and outputs."""
    outputs = [*SENTENCE_TENSORS, "feed", *state_names(state_count), *ctc]
    axes = {"features": {0: "batch", 1: "frames"}, "feature_lengths": {0: "batch"}}
    axes |= {name: {0: "batch", 1: "source"} for name in SENTENCE_TENSORS}
    axes |= {name: {0: "batch"} for name in ["feed", *state_names(state_count)]}
    axes |= {"ctc_log_probs": {0: "batch", 1: "source"}, "ctc_lengths": {0: "batch"}}
    return outputs, {name: v for name, v in axes.items() if name in [*SPEECH_INPUTS, *outputs]}


def export_speech_encoder(
    model: SpeechSeq2Seq, width: int, out: Path, cell: str, limit: int
) -> list[int]:
    """The encoder graph over ``width`` features a frame, for any number of frames, checked
    on the probe; or, where the trace fixed the frame count (a cell that loops over time in
    Python), one graph per frame bucket up to ``limit`` (train.max_length, the longest
    utterance trained on). Returns the buckets (none: one graph)."""
    graph = SpeechEncoderGraph(model).eval()
    ctc = CTC_OUTPUTS if model.ctc_head is not None else []
    example = example_features(width, TRACE_FRAMES)
    state_count = len(graph(*example)) - len(SENTENCE_TENSORS) - 1 - len(ctc)
    outputs, axes = encoder_axes(state_count, ctc)
    path = out / ENCODER_FILE
    trace_onnx(graph, example, path, outputs, axes, cell, SPEECH_INPUTS)
    probe = example_features(width, PROBE_FRAMES)
    if graph_matches(path, graph(*probe), dict(zip(SPEECH_INPUTS, probe, strict=True))):
        return []
    path.unlink()
    buckets = [n for n in FRAME_BUCKETS if n < limit] + [limit]
    for index, frames in enumerate(buckets):
        example = example_features(width, TRACE_FRAMES, frames)
        trace_onnx(graph, example, out / bucket_file(frames), outputs, axes, cell, SPEECH_INPUTS)
        probe = example_features(width, tuple(min(n, frames) for n in PROBE_FRAMES), frames)
        feeds = dict(zip(SPEECH_INPUTS, probe, strict=True))
        if index == 0 and not graph_matches(out / bucket_file(frames), graph(*probe), feeds):
            raise S2SError(
                f"cell {cell!r}: its step does not trace to ONNX (the traced encoder computes "
                "something else for another batch size), so the model cannot be exported"
            )
    return buckets
