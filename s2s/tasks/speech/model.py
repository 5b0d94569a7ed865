"""The speech recogniser: features -> convolutional subsampling -> encoder stack of cells ->
the attention decoder of `s2s.core.seq2seq.Seq2Seq`, plus an optional CTC head on the encoder.

Only `encode` differs from the text model, so greedy and beam search work unchanged. The
source embedding of the parent is the (shared) target embedding: speech has no source ids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.config import AudioConfig, Config, ModelConfig
from s2s.core.cell_registry import SideCells, side_cells
from s2s.core.recurrent_stack import CellFactory
from s2s.core.seq2seq import EncoderOutput, Seq2Seq
from s2s.data.tokenizer import PAD_ID
from s2s.tasks.speech.audio import input_width

CTC_BLANK = PAD_ID  # padding is never a target, so its id doubles as the CTC blank


def subsampled_lengths(lengths: Tensor, layers: int) -> Tensor:
    """Frames left after ``layers`` stride-2 convolutions (kernel 3, padding 1)."""
    for _ in range(layers):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


class ConvSubsampling(nn.Module):
    """Stride-2 1-D convolutions over time, each halving the frame rate (two: 4x), so the
    recurrent encoder runs over 25 frames a second instead of 100.

    Padding is zeroed before each convolution, so a padded utterance gives the same
    output at its real frames as the same utterance alone."""

    def __init__(self, input_size: int, output_size: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        widths = [input_size] + [output_size] * layers
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], output_size, kernel_size=3, stride=2, padding=1)
            for i in range(layers)
        )
        self.project = nn.Linear(input_size, output_size) if layers == 0 else None

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, F], lengths [B] -> y [B, T', output_size], lengths [B]."""
        if self.project is not None:
            return torch.relu(self.project(x)), lengths
        x = x.transpose(1, 2)  # B x F x T
        for conv in self.convs:
            steps = torch.arange(x.size(2), device=x.device)
            x = x * (steps < lengths.to(x.device).unsqueeze(1)).unsqueeze(1).to(x.dtype)
            x = torch.relu(conv(x))
            lengths = subsampled_lengths(lengths, 1)
        return x.transpose(1, 2), lengths


class SpeechSeq2Seq(Seq2Seq):
    """Attentional encoder-decoder over acoustic features, with an optional CTC head."""

    def __init__(
        self,
        config: ModelConfig,
        audio: AudioConfig,
        make_cell: CellFactory | SideCells,
        vocab_size: int,
        ctc: bool,
    ) -> None:
        super().__init__(config, make_cell, vocab_size, vocab_size, PAD_ID, share_vocab=True)
        self.frontend = ConvSubsampling(
            input_width(audio), config.embed_size, audio.subsampling_layers
        )
        self.ctc_head = nn.Linear(self.encoder.output_size, vocab_size) if ctc else None

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src [B, T, F] features (zero-padded), src_lengths [B] frames -> encoder output."""
        return self._encode(src, src_lengths)[0]

    def _encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EncoderOutput, Tensor, Tensor]:
        """The encoder output, the encoder states before dropout and their lengths."""
        x, lengths = self.frontend(src, src_lengths.cpu())
        states = self.encoder_states(self.dropout(x), lengths)
        steps = torch.arange(x.size(1), device=src.device)
        src_mask = steps.unsqueeze(0) < lengths.to(src.device).unsqueeze(1)
        memory, keys = self.attention.memory_and_keys(self.dropout(states))
        fields = {"memory": memory, "keys": keys, "src_mask": src_mask}
        if "src_ids" in EncoderOutput._fields:  # for copying, which speech does not use
            fields["src_ids"] = torch.full_like(src_mask, PAD_ID, dtype=torch.long)
        return EncoderOutput(**fields), states, lengths

    def ctc_scores(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """CTC log-probabilities [T', B, V] of the encoder and their lengths [B]."""
        _, log_probs, lengths = self.encode_with_ctc(src, src_lengths)
        return log_probs, lengths

    def encode_with_ctc(
        self, src: Tensor, src_lengths: Tensor
    ) -> tuple[EncoderOutput, Tensor, Tensor]:
        """The encoder output, and from the same pass the CTC log-probabilities [T', B, V]
        and their lengths [B] (joint CTC/attention decoding needs both)."""
        encoded, states, lengths = self._encode(src, src_lengths)
        return encoded, self.ctc_log_probs(states), lengths

    def ctc_log_probs(self, memory: Tensor) -> Tensor:
        """Encoder states [B, T', H] -> CTC log-probabilities [T', B, V] (fp32)."""
        assert self.ctc_head is not None
        logits = self.ctc_head(self.dropout(memory))
        return logits.float().log_softmax(dim=-1).transpose(0, 1)

    def forward_with_ctc(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced decoder scores [B, T, V], CTC log-probs [T', B, V] and their
        lengths [B], encoding once: a forward hook catches the encoder stack's output while
        the parent's `forward` runs unchanged."""
        caught: list[Tensor] = []
        handle = self.encoder.register_forward_hook(lambda _m, _i, out: caught.append(out[0]))
        try:
            scores = self(src, src_lengths, tgt_in)
        finally:
            handle.remove()
        lengths = subsampled_lengths(src_lengths.cpu(), self.frontend.layers)
        return scores, self.ctc_log_probs(caught[0]), lengths


def ctc_loss_sum(log_probs: Tensor, lengths: Tensor, tgt_out: Tensor, eos_id: int) -> Tensor:
    """Summed CTC negative log-likelihood of the targets (``tgt_out`` without EOS and PAD);
    an utterance too short for its transcript adds 0 rather than infinity."""
    target_lengths = ((tgt_out != PAD_ID) & (tgt_out != eos_id)).sum(dim=1)
    targets = tgt_out[:, : max(int(target_lengths.max()), 1)]
    return F.ctc_loss(
        log_probs,
        targets.masked_fill(targets == eos_id, PAD_ID),
        lengths.to(log_probs.device),
        target_lengths,
        blank=CTC_BLANK,
        reduction="sum",
        zero_infinity=True,
    )


def build_speech_model(config: Config, vocab_size: int) -> SpeechSeq2Seq:
    """The recogniser a (resolved) speech config describes."""
    model = config.model
    return SpeechSeq2Seq(
        model,
        config.audio,
        side_cells(model),
        vocab_size,
        ctc=config.train.ctc_weight > 0,
    )
