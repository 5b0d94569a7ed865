"""The two graphs an exported model consists of, as modules that torch.onnx traces.

The encoder graph maps a padded source batch to everything the decoder reads per sentence
(memory, attention keys, mask) and the decoder's start state per sentence. The step graph
advances every hypothesis by one token: previous tokens and the per-hypothesis state in,
log-probabilities and the new state out, attending over the per-sentence encoder output
(``rows`` hypotheses over ``batch`` sentences, a sentence's hypotheses consecutive, as the
model's own `decode_step` takes them). Cell states are flattened to a list of tensors in
layer order, so the graphs' inputs and outputs are plain named tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from s2s.cells import State, rebuild_state
from s2s.core.decoding import SearchState
from s2s.core.seq2seq import EncoderOutput, Seq2Seq
from s2s.tasks.language_model.decoder import LanguageModelDecoder

ENCODER_INPUTS = ["src", "src_lengths"]
SENTENCE_TENSORS = ["memory", "keys", "src_mask"]  # encoder outputs read by every step
STEP_SENTENCE_INPUTS = [*SENTENCE_TENSORS, "src_ids"]  # src_ids: the source, for copying


def state_names(count: int, suffix: str = "") -> list[str]:
    """Names of the flattened decoder state tensors: state.0, state.1, ..."""
    return [f"state{suffix}.{index}" for index in range(count)]


def flatten_states(states: Sequence[State]) -> list[Tensor]:
    """Per-layer cell states -> one list of tensors, layer by layer."""
    return [tensor for state in states for tensor in state]


def unflatten_states(layout: Sequence[State], flat: Sequence[Tensor]) -> list[State]:
    """The inverse of `flatten_states`, with each layer's state type taken from ``layout``."""
    states, start = [], 0
    for like in layout:
        states.append(rebuild_state(like, flat[start : start + len(like)]))
        start += len(like)
    return states


class EncoderGraph(nn.Module):
    """src [B, S], src_lengths [B] -> memory, keys, src_mask, feed, state.0 ... (all [B, ...])."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        encoded = self.model.encode(src, src_lengths)
        states, feed = self.model.initial_state(encoded)
        return (encoded.memory, encoded.keys, encoded.src_mask, feed, *flatten_states(states))


class StepGraph(nn.Module):
    """prev_tokens [N], memory, keys, src_mask, src_ids [B, S, ...], feed [N, A], state.i [N, ...]
    -> log_probs [N, V] (fp32), feed.out, state.out.i."""

    def __init__(self, model: Seq2Seq, layout: Sequence[State]) -> None:
        super().__init__()
        self.model = model
        self.layout = list(layout)

    def forward(
        self,
        prev_tokens: Tensor,
        memory: Tensor,
        keys: Tensor,
        src_mask: Tensor,
        src_ids: Tensor,
        feed: Tensor,
        *flat_states: Tensor,
    ) -> tuple[Tensor, ...]:
        encoded = EncoderOutput(memory, keys, src_mask, src_ids)
        states = unflatten_states(self.layout, flat_states)
        log_probs, (states, feed), _ = self.model.decode_step(prev_tokens, (states, feed), encoded)
        return (log_probs, feed, *flatten_states(states))


class LanguageModelStepGraph(nn.Module):
    """A language model's step: prev_tokens [N], state.i [N, ...] -> log_probs [N, V]
    (``<unk>`` excluded, as `LanguageModelDecoder` scores), state.out.i. A prompt is read
    through it token by token from zero states."""

    def __init__(self, model: nn.Module, layout: Sequence[State]) -> None:
        super().__init__()
        self.decoder = LanguageModelDecoder(model)
        self.model = model
        self.layout = list(layout)

    def forward(self, prev_tokens: Tensor, *flat_states: Tensor) -> tuple[Tensor, ...]:
        states = unflatten_states(self.layout, flat_states)
        log_probs, state = self.decoder.step(prev_tokens, SearchState((states, None)))
        return (log_probs, *flatten_states(state.hypotheses[0]))
