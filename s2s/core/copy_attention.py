"""The copy mechanism of pointer-generator networks (See et al. 2017, "Get To The Point").

At every target step a learned switch p_gen = sigmoid(w . [context; h; x] + b) mixes two
distributions over the shared (joint) vocabulary:

    P(w) = p_gen * P_vocab(w) + (1 - p_gen) * sum_{i: src_i = w} attention_i

so a token that occurs in the source can be produced even when the output layer never
learned to generate it (names, version numbers, rare words).

The mixture is returned as log-probabilities in fp32. They are already normalised, so
``log_softmax`` of them is the identity (up to rounding): ``F.cross_entropy(log_p, y)``
equals ``-log_p[y]``, and label smoothing spreads over log P too. That is why the trainer's
loss, the validation loss and search all take the model's output unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Copy probabilities are clamped here before the log: tokens absent from the source have
# copy probability 0, and log(0) would give -inf with NaN gradients through logaddexp.
TINY = 1e-30


def copy_distribution(weights: Tensor, src_ids: Tensor, vocab_size: int) -> Tensor:
    """Attention weights [B, T, S] summed onto the source tokens' ids -> [B, T, V] (fp32).

    A token that occurs twice in the source gets both positions' weight; padding has
    weight 0 (attention is masked), so it adds nothing to the PAD id. ``src_ids`` may have
    one row per sentence for B / rows consecutive rows of weights (a sentence's beams).
    """
    batch, steps, _ = weights.shape
    if src_ids.size(0) != batch:
        src_ids = src_ids.repeat_interleave(batch // src_ids.size(0), dim=0)
    index = src_ids.unsqueeze(1).expand(batch, steps, src_ids.size(1))
    out = weights.new_zeros(batch, steps, vocab_size, dtype=torch.float32)
    return out.scatter_add_(2, index, weights.float())


class CopySwitch(nn.Module):
    """The generate-or-copy switch and the mixture of the two distributions."""

    def __init__(self, context_size: int, query_size: int, input_size: int) -> None:
        super().__init__()
        self.gate = nn.Linear(context_size + query_size + input_size, 1)

    def forward(
        self,
        logits: Tensor,
        weights: Tensor,
        context: Tensor,
        query: Tensor,
        inputs: Tensor,
        src_ids: Tensor,
    ) -> Tensor:
        """Mixture log-probabilities [B, T, V] (fp32).

        logits [B, T, V] of the output layer; weights [B, T, S] attention; context
        [B, T, M], query [B, T, H] decoder output, inputs [B, T, E] target embeddings;
        src_ids [B, S] the source token ids the attention positions hold.
        """
        switch = self.gate(torch.cat([context, query, inputs], dim=-1)).float()  # B x T x 1
        # log p_gen and log(1 - p_gen) straight from the logit: stable at both ends.
        log_generate, log_copy = F.logsigmoid(switch), F.logsigmoid(-switch)
        vocab = logits.float().log_softmax(dim=-1)
        copied = copy_distribution(weights, src_ids, logits.size(-1))
        return torch.logaddexp(log_generate + vocab, log_copy + copied.clamp(min=TINY).log())
