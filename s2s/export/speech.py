"""The encoder graph of a speech run: acoustic features in, everything the decoder-step
graph reads out (the step graph is the text model's, s2s.export.graphs), and, when the run
has a CTC head, the CTC log-probabilities over the encoder frames that joint CTC/attention
decoding scores prefixes with (s2s.exported.ctc)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from s2s.errors import S2SError
from s2s.export.graphs import SENTENCE_TENSORS, flatten_states, state_names
from s2s.export.tracing import graph_matches, trace_onnx
from s2s.exported.files import ENCODER_FILE
from s2s.tasks.speech.model import SpeechSeq2Seq

SPEECH_INPUTS = ["features", "feature_lengths"]
CTC_OUTPUTS = ["ctc_log_probs", "ctc_lengths"]
TRACE_FRAMES = (41, 23)  # the example batch the encoder is traced on, in feature frames
PROBE_FRAMES = (57, 30, 9)  # another batch size and length, to check the trace


def example_features(width: int, frames: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Random features [B, T, ``width``] (zero beyond each length, as batches are padded)
    and the lengths [B]: the speech counterpart of a source batch."""
    generator = torch.Generator().manual_seed(len(frames))
    features = torch.zeros(len(frames), max(frames), width)
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


def export_speech_encoder(model: SpeechSeq2Seq, width: int, out: Path, cell: str) -> None:
    """The encoder graph over ``width`` features a frame, for any number of frames, checked
    on the probe. A cell whose
    whole-sequence pass loops over time in Python (the trace fixes the frame count) is
    refused: per-length graphs would be needed for every utterance length."""
    graph = SpeechEncoderGraph(model).eval()
    ctc = CTC_OUTPUTS if model.ctc_head is not None else []
    example = example_features(width, TRACE_FRAMES)
    state_count = len(graph(*example)) - len(SENTENCE_TENSORS) - 1 - len(ctc)
    outputs = [*SENTENCE_TENSORS, "feed", *state_names(state_count), *ctc]
    axes = {"features": {0: "batch", 1: "frames"}, "feature_lengths": {0: "batch"}}
    axes |= {name: {0: "batch", 1: "source"} for name in SENTENCE_TENSORS}
    axes |= {name: {0: "batch"} for name in ["feed", *state_names(state_count)]}
    axes |= {"ctc_log_probs": {0: "batch", 1: "source"}, "ctc_lengths": {0: "batch"}}
    axes = {name: value for name, value in axes.items() if name in [*SPEECH_INPUTS, *outputs]}
    path = out / ENCODER_FILE
    trace_onnx(graph, example, path, outputs, axes, cell, SPEECH_INPUTS)
    probe = example_features(width, PROBE_FRAMES)
    if not graph_matches(path, graph(*probe), dict(zip(SPEECH_INPUTS, probe, strict=True))):
        path.unlink()
        raise S2SError(
            f"cell {cell!r}: its whole-sequence pass does not trace to one ONNX graph for "
            "every number of frames, so a speech encoder of it cannot be exported"
        )
