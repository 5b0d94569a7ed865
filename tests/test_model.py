"""The encoder-decoder: padding never changes a sentence's encoding or translation."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, search_step_log_probs

from s2s.config import ModelConfig
from s2s.core.search import BeamSearch, max_output_lengths
from s2s.data.batching import collate


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
def test_encoder_output_is_padding_invariant(cell: str, attention: str) -> None:
    model = make_model(cell, attention=attention)
    sentences = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    batch = collate([0, 1], sentences)
    alone = collate([0], [sentences[1]])
    with torch.no_grad():
        both = model.encode(batch.src, batch.src_lengths)
        single = model.encode(alone.src, alone.src_lengths)
        length = int(alone.src_lengths[0])
        torch.testing.assert_close(both.memory[1, :length], single.memory[0], atol=1e-5, rtol=1e-5)
        state_both = model.initial_state(both)
        state_single = model.initial_state(single)
        torch.testing.assert_close(
            state_both[0][0][0][1], state_single[0][0][0][0], atol=1e-5, rtol=1e-5
        )


def test_attention_gives_padding_zero_weight() -> None:
    model = make_model()
    batch = collate([0, 1], [[5, 6, 7, 8, 9], [12]])
    with torch.no_grad():
        encoded = model.encode(batch.src, batch.src_lengths)
        state = model.initial_state(encoded)
        _, _, weights = model.decode_step(torch.tensor([2, 2]), state, encoded)
    assert torch.all(weights[1, 2:] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


@pytest.mark.parametrize("input_feeding", [False, True])
@pytest.mark.parametrize("attentional_size", [0, 20])
def test_teacher_forcing_matches_stepwise_decoding(input_feeding: bool, attentional_size: int):
    """The fused whole-sequence decoder computes what search computes step by step (also
    with an attentional vector wider than the embeddings, as OpenNMT-py builds it)."""
    untied = {"tie_embeddings": False, "attentional_size": attentional_size}
    model = make_model(input_feeding=input_feeding, **(untied if attentional_size else {}))
    if attentional_size:
        assert model.output.in_features == model.combine.out_features == attentional_size
    batch = collate([0], [[5, 6, 7]], [[8, 9, 10, 11]])
    with torch.no_grad():
        logits = model(batch.src, batch.src_lengths, batch.tgt_in).log_softmax(-1)
        stepwise = search_step_log_probs(model, batch)
    torch.testing.assert_close(stepwise, logits, atol=1e-5, rtol=1e-5)


def test_translation_is_the_same_alone_and_padded_in_a_batch() -> None:
    model = make_model()
    sentences = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15, 16]]
    batch = collate([0, 1], sentences)
    alone = collate([0], [sentences[1]])
    limits = max_output_lengths(batch.src_lengths, 2.0, 5)
    together = BeamSearch(4).search(model, batch.src, batch.src_lengths, limits)
    single = BeamSearch(4).search(model, alone.src, alone.src_lengths, limits[1:])
    assert together[1][0].tokens == single[0][0].tokens
    assert together[1][0].score == pytest.approx(single[0][0].score, abs=1e-4)


def test_tied_embeddings_share_one_matrix() -> None:
    model = make_model()
    assert model.output.weight is model.src_embed.weight is model.tgt_embed.weight


def test_tied_embeddings_need_the_attentional_vector_as_wide_as_them() -> None:
    with pytest.raises(ValueError, match="attentional_size must equal embed_size"):
        ModelConfig(embed_size=16, attentional_size=20)
    assert ModelConfig(embed_size=16, attentional_size=16).tie_embeddings


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_input_feeding_training_gradients_are_those_of_plain_steps(monkeypatch, amp) -> None:
    """In CPU training the input-feeding decoder computes its LSTM and combine weight
    gradients once per pass (s2s.kernels.time_batched_linear): the same loss and gradients as
    stepping with the plain cell and layer, in fp32 and under bf16 autocast."""
    model = make_model(input_feeding=True, decoder_layers=2, residual=True).train()
    batch = collate([0, 1, 2], [[5, 6, 7, 8], [9, 10], [11, 12, 13]], [[4, 5, 6], [7], [8, 9]])

    def loss_and_gradients():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch.tgt_out.flatten(), ignore_index=0
        )
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_gradients()
    cell = model.decoder.layers[0][0]
    assert cell.stepper() != cell.step  # the LSTM's own, time-batched steps were used
    monkeypatch.setattr(model, "_pass_steps", lambda: (model.decoder.step, None))
    plain_loss, plain_grads = loss_and_gradients()
    tolerance = {"atol": 1e-6, "rtol": 1e-5} if amp is None else {"atol": 2e-2, "rtol": 5e-2}
    torch.testing.assert_close(loss, plain_loss, **tolerance)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], **tolerance, msg=name)
