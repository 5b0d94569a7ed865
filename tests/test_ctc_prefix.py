"""Joint CTC/attention decoding: CTC prefix scores against brute force over every path, a
whole hypothesis scored step by step as the CTC loss scores it, and the search using it."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from s2s.config import AudioConfig, DecodeConfig, ModelConfig
from s2s.core.search import search_batch
from s2s.data.tokenizer import BOS_ID, EOS_ID
from s2s.tasks.speech.ctc_prefix import JointCTCDecoder, prefix_forward
from s2s.tasks.speech.data import speech_collate
from s2s.tasks.speech.model import CTC_BLANK, SpeechSeq2Seq

FRAMES, SYMBOLS = 4, 3  # blank 0 and labels 1, 2


def collapse(path: tuple[int, ...]) -> list[int]:
    merged = [t for i, t in enumerate(path) if i == 0 or t != path[i - 1]]
    return [t for t in merged if t != CTC_BLANK]


def brute_force(log_probs: torch.Tensor, accept) -> float:
    """log of the summed probability of every frame path whose collapse ``accept``s."""
    total = sum(
        float(log_probs[range(FRAMES), list(path)].sum().exp())
        for path in itertools.product(range(SYMBOLS), repeat=FRAMES)
        if accept(collapse(path))
    )
    return math.log(total) if total > 0 else float("-inf")


@pytest.mark.parametrize("prefix", [[1], [1, 2], [2, 2], [1, 1, 2], [2, 1, 2, 1], [1, 2, 1, 2, 1]])
def test_prefix_scores_and_end_scores_equal_sums_over_all_paths(prefix: list[int]) -> None:
    torch.manual_seed(5)
    log_probs = torch.randn(FRAMES, SYMBOLS).log_softmax(-1)
    frames = torch.cat([torch.zeros(1, SYMBOLS), log_probs]).unsqueeze(0)  # dummy slot 0
    r_blank = frames[:, :, CTC_BLANK].cumsum(dim=1)
    r_nonblank = torch.full_like(r_blank, float("-inf"))
    last = torch.tensor([BOS_ID])
    for length, token in enumerate(prefix, start=1):
        nonblank, blank, score = prefix_forward(
            frames, r_nonblank, r_blank, last, torch.tensor([[token]])
        )
        head = prefix[:length]
        expected = brute_force(log_probs, lambda labels, head=head: labels[: len(head)] == head)
        assert float(score) == pytest.approx(expected, abs=1e-5)
        r_nonblank, r_blank, last = nonblank[:, :, 0], blank[:, :, 0], torch.tensor([token])
    whole = float(torch.logaddexp(r_nonblank[0, -1], r_blank[0, -1]))
    assert whole == pytest.approx(brute_force(log_probs, lambda labels: labels == prefix), abs=1e-5)


def tiny_model() -> SpeechSeq2Seq:
    from s2s.core.cell_registry import cell_factory

    torch.manual_seed(0)
    config = ModelConfig(embed_size=16, hidden_size=24, encoder_layers=1, decoder_layers=1)
    config.dropout = 0.0
    audio = AudioConfig(features="precomputed", feature_dim=13)
    return SpeechSeq2Seq(config, audio, cell_factory("lstm", {}), 12, ctc=True).eval()


def test_a_hypothesis_scored_step_by_step_gets_its_ctc_log_likelihood() -> None:
    """With weight 1 the step scores of a hypothesis, EOS included, add up to
    log P_ctc(hypothesis | utterance), for utterances of different lengths in one batch."""
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(n, 13, generator=generator) for n in (40, 29)]
    batch = speech_collate([0, 1], features)
    hypotheses = [[5, 6, 6, 7], [8, 4, 9]]
    joint = JointCTCDecoder(model, 1.0)
    with torch.inference_mode():
        encoded = joint.encode(batch.src, batch.src_lengths)
        state = joint.initial_state(encoded)
        prev, total = torch.full((2,), BOS_ID), torch.zeros(2)
        for step in range(4):
            tokens = torch.tensor([h[step] if step < len(h) else EOS_ID for h in hypotheses])
            log_probs, state, _ = joint.decode_step(prev, state, encoded)
            total += log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
            prev = tokens
        log_probs, _, _ = joint.decode_step(prev, state, encoded)
        total[0] += log_probs[0, EOS_ID]  # the second hypothesis ended at step 3
        ctc, lengths = model.ctc_scores(batch.src, batch.src_lengths)
    for row, hypothesis in enumerate(hypotheses):
        expected = -F.ctc_loss(
            ctc[: lengths[row], row],
            torch.tensor(hypothesis),
            lengths[row : row + 1],
            torch.tensor([len(hypothesis)]),
            blank=CTC_BLANK,
            reduction="sum",
        )
        assert float(total[row]) == pytest.approx(float(expected), abs=1e-4)


def test_joint_search_only_finds_hypotheses_that_ctc_can_emit() -> None:
    """An attention decoder that will not end runs to the length limit; with CTC in the
    score every hypothesis fits the frames (no more labels plus repeats than frames) and
    ends with a finite score, in greedy and beam search."""
    model = tiny_model()
    with torch.no_grad():
        model.output.bias[EOS_ID] = -20.0
    generator = torch.Generator().manual_seed(2)
    features = [torch.randn(n, 13, generator=generator) for n in (24, 16)]
    batch = speech_collate([0, 1], features)
    decode = DecodeConfig(max_length_ratio=2.0, max_length_offset=10)
    frames = [6, 4]  # 24 and 16 frames after 4x subsampling
    for beam in (1, 4):
        found = search_batch(
            JointCTCDecoder(model, 0.5), batch.src, batch.src_lengths, decode, beam, nbest=beam
        )
        for hypotheses, available in zip(found, frames, strict=True):
            assert hypotheses
            for hypothesis in hypotheses:
                repeats = sum(a == b for a, b in itertools.pairwise(hypothesis.tokens))
                assert len(hypothesis.tokens) + repeats <= available
                assert math.isfinite(hypothesis.score)
    plain = search_batch(model, batch.src, batch.src_lengths, decode, 1)
    assert min(len(h[0].tokens) for h in plain) > 6  # without CTC it overruns the frames


def test_joint_decoding_refuses_a_model_without_a_ctc_head() -> None:
    from s2s.core.cell_registry import cell_factory

    config = ModelConfig(embed_size=16, hidden_size=24, encoder_layers=1, decoder_layers=1)
    audio = AudioConfig(features="precomputed", feature_dim=13)
    model = SpeechSeq2Seq(config, audio, cell_factory("lstm", {}), 12, ctc=False)
    with pytest.raises(ValueError, match="CTC head"):
        JointCTCDecoder(model, 0.5)


def test_a_recipe_decoding_with_ctc_but_training_without_it_is_a_config_error() -> None:
    from pathlib import Path

    from s2s.errors import ConfigError
    from s2s.tasks.recipe import load_config

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "asr.toml"
    with pytest.raises(ConfigError, match=r"decode.ctc_weight > 0 needs a CTC head"):
        load_config(recipe, ["train.ctc_weight=0"])
    assert load_config(recipe, ["train.ctc_weight=0", "decode.ctc_weight=0"]).decode.ctc_weight == 0
