"""Length-bucketed batches sized by a token budget, padded, with masks derived from lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# token_batches lives apart from torch (the exported-model runner batches with it too)
from s2s.data.length_batches import token_batches as token_batches
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    """One padded batch. Sources end with EOS; targets are BOS-prefixed in, EOS-suffixed out."""

    indices: list[int]  # positions of the examples in their split
    src: Tensor  # B x S
    src_lengths: Tensor  # B
    tgt_in: Tensor | None = None  # B x T
    tgt_out: Tensor | None = None  # B x T, PAD where there is no target token

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``. To CUDA the tensors are pinned first, so the copies are
        asynchronous and the host does not wait for them (pinning would only cost on CPU)."""
        pin = device.type == "cuda"

        def move(t: Tensor | None) -> Tensor | None:
            if t is None or t.device == device:
                return t
            if pin and t.device.type == "cpu":
                t = t.pin_memory()
            return t.to(device, non_blocking=True)

        lengths = self.src_lengths
        if pin and not lengths.is_pinned():  # masks copy them to the device: asynchronously
            lengths = lengths.pin_memory()
        return Batch(
            self.indices,
            move(self.src),
            lengths,  # lengths stay on the CPU: packing and masks read them there
            move(self.tgt_in),
            move(self.tgt_out),
        )

    @property
    def num_tgt_tokens(self) -> int:
        assert self.tgt_out is not None
        return int((self.tgt_out != PAD_ID).sum())


def pad(sequences: Sequence[Sequence[int]]) -> Tensor:
    """Right-pad token lists into a B x max_len tensor."""
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def source_ids(ids: Sequence[int]) -> list[int]:
    return [*ids, EOS_ID]


def collate(
    indices: list[int], src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]] | None = None
) -> Batch:
    """Build a batch from the examples at ``indices``."""
    src_rows = [source_ids(src[i]) for i in indices]
    batch = Batch(indices, pad(src_rows), torch.tensor([len(s) for s in src_rows]))
    if tgt is not None:
        batch.tgt_in = pad([[BOS_ID, *tgt[i]] for i in indices])
        batch.tgt_out = pad([[*tgt[i], EOS_ID] for i in indices])
    return batch
