"""The decoder-only language model: embedding -> stack of cell plugins -> tied output layer.

No encoder and no attention: the same `RecurrentStack` the translation decoder uses, read
left to right over a token stream. Dropout is applied to the embeddings, between layers (by
the stack) and to the top layer's output. Its hidden state is returned from every call, so
training can carry it across batches (truncated back-propagation through time) and
generation can continue from it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s.cells import State
from s2s.config import Config, ModelConfig
from s2s.core.cell_registry import side_cells
from s2s.core.dropout import Dropout
from s2s.core.recurrent_stack import CellFactory, RecurrentStack
from s2s.data.tokenizer import BOS_ID, PAD_ID
from s2s.kernels.packed_linear import DropsPackedCopies, PackedWeight

LayerStates = list[State]  # one cell state per layer, every tensor batch-first

# Ids the stream never holds as a target: their logits are -inf, so the softmax runs over
# the real vocabulary only (on PTB exactly the standard 10 000 words, <unk> and <eos>).
NEVER_PREDICTED = (PAD_ID, BOS_ID)


def detach_states(states: LayerStates) -> LayerStates:
    """The same states cut from the graph that made them (the truncation in TBPTT)."""
    return [tuple(t.detach() for t in state) for state in states]


class LanguageModel(DropsPackedCopies, nn.Module):
    """A recurrent language model over one vocabulary; layers = ``model.decoder_layers``."""

    def __init__(self, config: ModelConfig, make_cell: CellFactory, vocab_size: int) -> None:
        super().__init__()
        embed = config.embed_size
        self.config = config
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=PAD_ID)
        self.stack = RecurrentStack(
            make_cell,
            embed,
            config.hidden_size,
            config.decoder_layers,
            dropout=config.dropout,
            residual=config.residual,
        )
        width = self.stack.output_size
        # Tying needs the top layer as wide as the embedding; a projection bridges widths.
        tied = config.tie_embeddings
        self.bottleneck = nn.Linear(width, embed) if tied and width != embed else None
        self.output = nn.Linear(embed if tied else width, vocab_size)
        if tied:
            self.output.weight = self.embed.weight
        self.dropout = Dropout(config.dropout)
        never = torch.tensor(sorted(NEVER_PREDICTED), dtype=torch.long)
        self.register_buffer("never_predicted", never, persistent=False)
        # The output layer packed once for CPU inference (s2s.kernels.packed_linear): scoring
        # multiplies 256-row chunks by it, generation single rows.
        self._packed_output = PackedWeight()
        # Small uniform embeddings (Zaremba et al.): with tied weights, N(0, 1) rows would
        # make the first logits so large that early training only fights the softmax.
        with torch.no_grad():
            self.embed.weight.uniform_(-0.1, 0.1)
            self.output.bias.zero_()

    def initial_states(self, batch_size: int, device: torch.device) -> LayerStates:
        """Zero states for ``batch_size`` streams."""
        return [layer[0].initial_state(batch_size, device=device) for layer in self.stack.layers]

    def _logits(self, h: Tensor) -> Tensor:
        h = self.dropout(h)
        if self.bottleneck is not None:
            h = self.bottleneck(h)
        logits = self._packed_output.layer(self.output, h)
        # in place on the fresh logits, a few columns: masked_fill copied all of them
        return logits.index_fill_(-1, self.never_predicted, float("-inf"))

    def forward(
        self, tokens: Tensor, states: LayerStates | None = None
    ) -> tuple[Tensor, LayerStates]:
        """tokens [B, T] -> (next-token logits [B, T, V], final state per layer).

        ``states`` None starts every stream from zeros."""
        embedded = self.dropout(self.embed(tokens))
        h, finals = self.stack(embedded, states=states, return_states=True)
        assert finals is not None
        return self._logits(h), finals

    def step(self, tokens: Tensor, states: LayerStates) -> tuple[Tensor, LayerStates]:
        """One token per stream: tokens [B] -> (logits [B, V] in fp32, new states)."""
        h, states = self.stack.step(self.embed(tokens), states)
        return self._logits(h).float(), states


def build_language_model(config: Config, vocab_size: int) -> LanguageModel:
    model_cfg = config.model
    # one stack of the decoder's cell: model.decoder_cell, or the model.cell shorthand
    return LanguageModel(model_cfg, side_cells(model_cfg).decoder, vocab_size)
