"""Joint CTC/attention decoding (Watanabe et al. 2017, Hori et al. 2017): at every search
step each candidate token's attention log-probability is mixed with its CTC *prefix* score,
log P_ctc(prefix + token, ...) - log P_ctc(prefix, ...), computed from the encoder's CTC
head by the prefix forward algorithm.

An attention decoder alone can run ahead of the audio, repeat or drop letters and still
score well; the CTC prefix score is monotonic and bound to the frames, so it vetoes such
hypotheses while they are being built rather than only ranking finished ones. EOS gets the
probability that CTC has emitted the whole prefix by the last frame.

`JointCTCDecoder` wraps a speech model in the search's step protocol (`s2s.core.decoding`),
so greedy and beam search use it unchanged. Its decoder state carries, per hypothesis, the
CTC forward variables of the prefix extended by each scored candidate; the next step picks
the row of the token the search appended.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from s2s.core.decoding import SearchState
from s2s.data.tokenizer import BOS_ID, EOS_ID
from s2s.tasks.speech.model import CTC_BLANK, SpeechSeq2Seq

# Vocabularies up to this size are CTC-scored in full at every step (characters); larger
# ones only for the attention decoder's best tokens (ESPnet's partial scoring), which
# bounds the per-step work at ``PRE_BEAM`` candidates.
FULL_SCORING_LIMIT = 128
PRE_BEAM = 40

NEG_INF = float("-inf")


def prefix_forward(
    frames: Tensor, r_nonblank: Tensor, r_blank: Tensor, last: Tensor, candidates: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Extend each hypothesis's prefix g by each of its candidate tokens c.

    ``frames`` [N, T+1, V]: CTC log-probabilities with a dummy slot 0 and, beyond an
    utterance's frames, blank at log 1 and every label at -inf. ``r_nonblank``, ``r_blank``
    [N, T+1]: log-probabilities that g has been emitted by frame t ending in a label / in
    blank (slot 0 is "before the first frame": blank = 0 for the empty prefix). ``last``
    [N]: g's last token (BOS for the empty prefix). ``candidates`` [N, M].

    Returns the forward variables of every g + c, ``[N, T+1, M]`` twice, and the prefix
    scores log P(g + c, ...) [N, M].
    """
    count, slots, width = frames.size(0), frames.size(1), candidates.size(1)
    label = frames.gather(2, candidates.unsqueeze(1).expand(count, slots, width))  # N x T+1 x M
    blank = frames[:, :, CTC_BLANK].unsqueeze(2)  # N x T+1 x 1
    repeated = (candidates == last.unsqueeze(1)).unsqueeze(1)  # N x 1 x M
    # phi: g emitted by frame t in a way that c may follow as a new label (after a blank
    # when c repeats g's last label).
    phi = torch.logaddexp(
        r_blank.unsqueeze(2), r_nonblank.unsqueeze(2).masked_fill(repeated, NEG_INF)
    )  # N x T+1 x M
    new_nonblank = torch.full_like(label, NEG_INF)
    new_blank = torch.full_like(label, NEG_INF)
    for t in range(1, slots):
        new_nonblank[:, t] = torch.logaddexp(new_nonblank[:, t - 1], phi[:, t - 1]) + label[:, t]
        new_blank[:, t] = torch.logaddexp(new_blank[:, t - 1], new_nonblank[:, t - 1]) + blank[:, t]
    scores = torch.logsumexp(phi[:, :-1] + label[:, 1:], dim=1)  # c first emitted at frame t
    return new_nonblank, new_blank, scores


class JointCTCDecoder(torch.nn.Module):
    """A speech model whose step log-probabilities are (1 - w) x attention + w x CTC prefix
    score; ``weight`` = 1 decodes by CTC alone (the attention decoder still runs)."""

    scores_chosen_rows = False  # the CTC prefix scores need every row

    def __init__(self, model: SpeechSeq2Seq, weight: float) -> None:
        super().__init__()
        if model.ctc_head is None:
            raise ValueError("joint CTC decoding needs a model trained with a CTC head")
        self.model = model
        self.weight = weight
        vocab = model.output.out_features
        self.width = vocab if vocab <= FULL_SCORING_LIMIT else min(PRE_BEAM, vocab)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple:
        """The attention decoder's encoder output and the CTC frames [B, T'+1, V] (fp32)."""
        encoded, log_probs, lengths = self.model.encode_with_ctc(src, src_lengths)
        frames = log_probs.transpose(0, 1)  # B x T' x V
        steps = torch.arange(frames.size(1), device=frames.device)
        beyond = steps.unsqueeze(0) >= lengths.to(frames.device).unsqueeze(1)  # B x T'
        frames = frames.masked_fill(beyond.unsqueeze(2), NEG_INF)
        frames[:, :, CTC_BLANK] = frames[:, :, CTC_BLANK].masked_fill(beyond, 0.0)
        dummy = frames.new_zeros(frames.size(0), 1, frames.size(2))
        return encoded, torch.cat([dummy, frames], dim=1)

    def initial_state(self, encoded: tuple) -> tuple:
        """The model's state and the CTC variables of the empty prefix, as the one
        "candidate" BOS that the first step's previous token selects."""
        inner, frames = encoded
        count = frames.size(0)
        r_blank = frames[:, :, CTC_BLANK].cumsum(dim=1)  # slot 0 is 0: log 1 before frame 1
        r_nonblank = torch.full_like(r_blank, NEG_INF)
        candidates = torch.full((count, 1), BOS_ID, dtype=torch.long, device=frames.device)
        scores = frames.new_zeros(count, 1)
        ctc = (candidates, r_nonblank.unsqueeze(2), r_blank.unsqueeze(2), scores)
        return self.model.initial_state(inner), ctc

    def decode_step(self, prev_tokens: Tensor, state: tuple, encoded: tuple):
        inner_encoded, frames = encoded
        inner_state, (candidates, r_nonblank, r_blank, scores) = state
        attention, inner_state, weights = self.model.decode_step(
            prev_tokens, inner_state, inner_encoded
        )
        # The forward variables of the prefix the search extended by prev_tokens.
        position = (candidates == prev_tokens.unsqueeze(1)).int().argmax(dim=1)
        rows = torch.arange(prev_tokens.size(0), device=prev_tokens.device)
        g_nonblank, g_blank = r_nonblank[rows, :, position], r_blank[rows, :, position]
        g_score = scores[rows, position]

        choice = attention.clone()
        choice[:, EOS_ID] = math.inf  # always scored: CTC must be able to end the sentence
        next_candidates = choice.topk(self.width, dim=1).indices  # N x M
        new_nonblank, new_blank, new_scores = prefix_forward(
            frames, g_nonblank, g_blank, prev_tokens, next_candidates
        )
        ended = next_candidates == EOS_ID
        end_score = torch.logaddexp(g_nonblank[:, -1], g_blank[:, -1]).unsqueeze(1)
        new_scores = torch.where(ended, end_score, new_scores)
        new_scores = new_scores.masked_fill(
            (next_candidates == BOS_ID) | (next_candidates == CTC_BLANK), NEG_INF
        )
        ctc = (new_scores - g_score.unsqueeze(1)).nan_to_num(nan=NEG_INF)  # -inf - -inf
        mixed = (
            ctc
            if self.weight == 1
            else ((1 - self.weight) * attention.gather(1, next_candidates) + self.weight * ctc)
        )
        log_probs = torch.full_like(attention, NEG_INF).scatter(1, next_candidates, mixed)
        ctc_state = (next_candidates, new_nonblank, new_blank, new_scores)
        return log_probs, (inner_state, ctc_state), weights

    def start(self, src: Tensor, src_lengths: Tensor) -> SearchState:
        """Search's start (s2s.core.decoding): the CTC frames are read per hypothesis, so
        the encoder output travels with each hypothesis too."""
        encoded = self.encode(src, src_lengths)
        return SearchState((self.initial_state(encoded), encoded))

    def step(
        self, tokens: Tensor, state: SearchState, rows: Tensor | None = None
    ) -> tuple[Tensor, SearchState]:
        """Search's step: `decode_step` without the attention weights (every row scored)."""
        decoder_state, encoded = state.hypotheses
        log_probs, decoder_state, _ = self.decode_step(tokens, decoder_state, encoded)
        return log_probs, SearchState((decoder_state, encoded))
