"""The attentional encoder-decoder built from cell plugins.

embedding -> encoder stack (bidirectional) -> mean-pooled bridge to the decoder's start
state -> decoder stack -> attention -> attentional vector tanh(W[context; h]) -> output
projection (tied to the target embedding when asked).

Without input feeding, training runs the decoder over whole target sequences in one fused
call and scores attention for all steps with one batched matmul. With it, the decoder goes
step by step; on the CPU its cells and the combine layer then compute their weight
gradients once per pass (s2s.kernels.time_batched_linear).

With ``model.copy`` a pointer-generator switch (s2s.core.copy_attention) mixes the output
distribution with copying source tokens; `forward` and `decode_step` then return the
mixture's log-probabilities where they otherwise return logits (see that module for why
the losses still hold).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, reduce
from typing import NamedTuple

import torch
from torch import Tensor, nn

from s2s.config import Config, ModelConfig
from s2s.core.attention import build_attention
from s2s.core.cell_registry import SideCells, side_cells
from s2s.core.copy_attention import CopySwitch
from s2s.core.decoding import SearchState, join_rows, select_rows
from s2s.core.dropout import Dropout
from s2s.core.length_groups import length_groups
from s2s.core.recurrent_stack import CellFactory, RecurrentStack
from s2s.data.tokenizer import PAD_ID, TokenizerPair
from s2s.kernels.packed_linear import DropsPackedCopies, PackedWeight, can_pack
from s2s.kernels.time_batched_linear import TimeBatchedLinear, time_batching_applies

# On this project's CPU (AMX), the combine layer of the peer benchmark model (1 024 -> 512,
# tanh) ran 20-35 % faster in bf16 as calls of at most 160 rows than in one call over
# 320-1 000 rows, and skips building kernels for more rows, 3-12 ms each. The output layer
# reads a large weight for every call, so it takes all rows at once
# (`tools/bench_packed.py --max-rows`, docs/performance-log.md).
COMBINE_BF16_MAX_ROWS = 160

# DecoderState = (per-layer cell states, previous attentional vector [B, A]); all batch-first.
DecoderState = tuple[list[tuple[Tensor, ...]], Tensor]


class EncoderOutput(NamedTuple):
    """What the decoder reads; every field is batch-first so search can reorder it."""

    memory: Tensor  # B x S x H
    keys: Tensor  # attention keys computed once from memory
    src_mask: Tensor  # B x S, True at real tokens
    src_ids: Tensor  # B x S source token ids (PAD beyond the length), for copying


class Seq2Seq(DropsPackedCopies, nn.Module):
    """Attentional recurrent encoder-decoder."""

    def __init__(
        self,
        config: ModelConfig,
        make_cell: CellFactory | SideCells,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int,
        share_vocab: bool,
    ) -> None:
        super().__init__()
        # one factory builds both sides; SideCells gives each side its own cell
        cells = make_cell if isinstance(make_cell, SideCells) else SideCells(make_cell, make_cell)
        embed, hidden = config.embed_size, config.hidden_size
        self.config = config
        self.pad_id = pad_id
        self.src_embed = nn.Embedding(src_vocab_size, embed, padding_idx=pad_id)
        if share_vocab and config.tie_embeddings:
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(tgt_vocab_size, embed, padding_idx=pad_id)
        encoder = RecurrentStack(
            cells.encoder,
            embed,
            hidden,
            config.encoder_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            residual=config.residual,
        )
        attentional = config.attentional_size or embed
        decoder_input = embed + attentional if config.input_feeding else embed
        decoder = RecurrentStack(
            cells.decoder,
            decoder_input,
            hidden,
            config.decoder_layers,
            dropout=config.dropout,
            residual=config.residual,
        )
        # Widths come from the stacks: a cell may project its output (LSTM proj_size).
        # Registration order is unchanged, so saved optimiser states still line up.
        memory_size, query_size = encoder.output_size, decoder.output_size
        self.encoder = encoder
        self.bridge = nn.Linear(memory_size, config.decoder_layers * decoder.seed_size)
        self.decoder = decoder
        self.attention = build_attention(config.attention, query_size, memory_size)
        self.combine = nn.Linear(memory_size + query_size, attentional, bias=False)
        self.output = nn.Linear(attentional, tgt_vocab_size)
        if config.tie_embeddings:
            self.output.weight = self.tgt_embed.weight
        self.dropout = Dropout(config.dropout)
        # Registered last and only with copy on: checkpoints without it load unchanged.
        self.copy_switch = CopySwitch(memory_size, query_size, embed) if config.copy else None
        # Packed copies of the combine and output weights for CPU decoding
        # (s2s.kernels.packed_linear)
        self._packed_combine = PackedWeight(bf16_max_rows=COMBINE_BF16_MAX_ROWS)
        self._packed_output = PackedWeight()
        # Under decode.amp = "int8" the encoder, which has no int8 path, runs in bf16 on
        # CPUs with native bf16 (set by s2s.kernels.precision.cast_for_decoding)
        self.encode_in_bf16 = False
        # With model.init = "pytorch" embeddings keep nn.Embedding's N(0, 1). The
        # Transformer-style std of embed**-0.5 starves the recurrent layers of input: on
        # recipes/mt.toml it left validation BLEU at 8.9 after 1 000 steps, where N(0, 1)
        # reaches 10 after 300. "uniform" (s2s.core.initialisation) re-draws them with the rest.

    def encoder_states(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """The encoder's output for padded inputs [B, S, E]. With `encode_in_bf16` (int8
        decoding) it runs under bf16 autocast and hands fp32 on: oneDNN's fused LSTM has
        no int8 path, and in fp32 it took 38 % of a greedy int8 pass of recipes/mt.toml."""
        if not self.encode_in_bf16:
            return self.encoder(inputs, lengths)[0]
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
            states, _ = self.encoder(inputs, lengths)
        return states.float()

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src [B, S] token ids (padded) -> encoder output; only the first
        ``max_source_length`` tokens are read when that is set."""
        limit = self.config.max_source_length
        if limit and src.size(1) > limit:
            src, src_lengths = src[:, :limit], src_lengths.clamp(max=limit)
        memory = self.encoder_states(self.dropout(self.src_embed(src)), src_lengths)
        steps = torch.arange(src.size(1), device=src.device)
        src_mask = steps.unsqueeze(0) < src_lengths.to(src.device, non_blocking=True).unsqueeze(1)
        memory, keys = self.attention.memory_and_keys(self.dropout(memory))
        return EncoderOutput(memory, keys, src_mask, src)

    def initial_state(self, encoded: EncoderOutput) -> DecoderState:
        """Decoder start state from the masked mean of the encoder states."""
        mask = encoded.src_mask.unsqueeze(-1).to(encoded.memory.dtype)
        pooled = (encoded.memory * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = pooled.to(self.bridge.weight.dtype)  # the memory may be an fp32 copy
        batch, layers = pooled.size(0), self.config.decoder_layers
        hidden = torch.tanh(self.bridge(pooled)).view(batch, layers, -1).transpose(0, 1)
        feed = pooled.new_zeros(batch, self.combine.out_features)
        return self.decoder.initial_states(hidden.contiguous()), feed

    def _attend(
        self, h: Tensor, encoded: EncoderOutput, combine: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h [B, T, H] -> attentional vectors [B, T, A], attention weights [B, T, S] and
        context vectors [B, T, M]. ``combine`` replaces the combine layer's own call (a
        `TimeBatchedLinear` of its weight in a step-by-step pass)."""
        context, weights = self.attention(h, encoded.keys, encoded.memory, encoded.src_mask)
        both, weight = torch.cat([context, h], dim=-1), self.combine.weight
        if combine is not None:
            attentional = torch.tanh(combine(both))
        elif not self.training and can_pack(both, weight):
            attentional = self._packed_combine.linear(both, weight, activation="tanh")
        else:
            attentional = torch.tanh(self.combine(both))
        return attentional, weights, context

    def _scores(
        self,
        attentional: Tensor,
        weights: Tensor,
        context: Tensor,
        h: Tensor,
        inputs: Tensor,
        encoded: EncoderOutput,
    ) -> Tensor:
        """Output scores [B, T, V]: logits, or with copy on the mixture's log-probs (fp32).
        ``inputs`` [B, T, E] are the target embeddings the decoder read."""
        logits = self._project(self.dropout(attentional))
        if self.copy_switch is None:
            return logits
        return self.copy_switch(logits, weights, context, h, inputs, encoded.src_ids)

    def _project(self, attentional: Tensor) -> Tensor:
        """The output layer; in CPU inference on a weight packed once
        (s2s.kernels.packed_linear)."""
        return self._packed_output.layer(self.output, attentional)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits [B, T, V] for targets tgt_in [B, T] (BOS-prefixed); with
        copy on, normalised log-probabilities instead (cross-entropy is the same on both)."""
        encoded = self.encode(src, src_lengths)
        states, feed = self.initial_state(encoded)
        embedded = self.dropout(self.tgt_embed(tgt_in))
        if self.config.input_feeding:
            decoder_step, combine = self._pass_steps()
            outputs, vectors = [], []
            for x_t in embedded.unbind(1):
                h_t, states = decoder_step(torch.cat([x_t, feed], dim=-1), states)
                step = self._attend(h_t.unsqueeze(1), encoded, combine)
                feed = step[0].squeeze(1)
                outputs.append(h_t)
                vectors.append(step)
            h = torch.stack(outputs, dim=1)
            parts = zip(*vectors, strict=True)  # per step -> per output, concatenated over T
            attentional, weights, context = (torch.cat(p, dim=1) for p in parts)
        else:
            h, _ = self.decoder(embedded, states=states)
            attentional, weights, context = self._attend(h, encoded)
        return self._scores(attentional, weights, context, h, embedded, encoded)

    def _pass_steps(self) -> tuple[Callable, Callable | None]:
        """The decoder step and combine layer of one step-by-step pass. In CPU training
        both compute their weight gradients once for the pass (s2s.kernels.time_batched_linear);
        elsewhere they are the plain step and layer."""
        weight = self.combine.weight
        if not time_batching_applies(weight, self.training):
            return self.decoder.stepper(), None
        return self.decoder.stepper(), TimeBatchedLinear(weight)

    @property
    def scores_chosen_rows(self) -> bool:
        """Whether decode_step takes ``rows``: not with copy, whose mixture reads them all."""
        return self.copy_switch is None

    def decode_step(
        self,
        prev_tokens: Tensor,
        state: DecoderState,
        encoded: EncoderOutput,
        rows: Tensor | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One search step: prev_tokens [B] -> (log-probs [B, V] in fp32, state, attn [B, S]).
        With ``rows`` (indices), log-probs of those rows only [R, V]: beam search needs none
        for its finished hypotheses, and the output layer is the largest part of a step."""
        states, feed = state
        embedded = self.tgt_embed(prev_tokens)
        x_t = torch.cat([embedded, feed], dim=-1) if self.config.input_feeding else embedded
        h, states = self.decoder.step(x_t, states)
        h = h.unsqueeze(1)
        attentional, weights, context = self._attend(h, encoded)
        if rows is None:
            scores = self._scores(attentional, weights, context, h, embedded.unsqueeze(1), encoded)
        elif self.scores_chosen_rows:
            scores = self._project(attentional.index_select(0, rows))
        else:
            raise ValueError("decode_step: a copy model scores every row")
        # log_softmax of the copy mixture's log-probs only rounds: it is already normalised
        log_probs = scores.squeeze(1).float().log_softmax(dim=-1)
        return log_probs, (states, attentional.squeeze(1)), weights.squeeze(1)

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        """Search's start (s2s.core.decoding): the decoder state per hypothesis, and the
        encoder output per sentence: decode_step reads one encoder row for the consecutive
        rows of a sentence's beams (s2s.core.attention), so beams need not copy it."""
        encoded = self.encode_by_length(src, src_lengths)
        return SearchState(self.initial_state(encoded), encoded)

    def encode_by_length(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """`encode` for search. On the CPU, a batch whose sources differ widely in length
        (a server's batch, in arrival order) is encoded in groups of similar length
        (s2s.core.length_groups) and padded back to one width with zeros, as sentences
        joining a search are (s2s.core.decoding): every row's output is the same."""
        if src.device.type != "cpu" or src.size(0) < 2:
            return self.encode(src, src_lengths)
        groups = length_groups(src_lengths.tolist())
        if len(groups) == 1:
            return self.encode(src, src_lengths)
        parts = []
        for group in groups:
            rows = torch.tensor(group)
            lengths = src_lengths.index_select(0, rows)
            parts.append(self.encode(src.index_select(0, rows)[:, : int(lengths.max())], lengths))
        joined = reduce(partial(join_rows, pad=True), parts)
        grouped_order = torch.tensor([row for group in groups for row in group])
        return select_rows(joined, grouped_order.argsort())

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        """Search's step (s2s.core.decoding): `decode_step` without the attention weights."""
        log_probs, decoder_state, _ = self.decode_step(
            tokens, state.hypotheses, state.sentences, rows
        )
        return log_probs, SearchState(decoder_state, state.sentences)


def build_seq2seq(config: Config, tokenizers: TokenizerPair) -> Seq2Seq:
    """The encoder-decoder a config describes, sized for the run's tokenisers."""
    model_cfg = config.model
    return Seq2Seq(
        model_cfg,
        side_cells(model_cfg),
        tokenizers.src.vocab_size,
        tokenizers.tgt.vocab_size,
        PAD_ID,
        share_vocab=tokenizers.joint,
    )
