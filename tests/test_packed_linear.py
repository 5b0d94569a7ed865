"""Decoding on weights packed for oneDNN (s2s.kernels.packed_linear) computes what the plain layers
compute, and follows the weights when training changes them."""

from __future__ import annotations

import copy

import pytest
import s2s_cells.gru
import torch
import torch.nn.functional as F
from helpers import search_step_log_probs

from s2s.config import ModelConfig
from s2s.core.cell_registry import cell_factory
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate
from s2s.kernels import packed_linear
from s2s.kernels.packed_linear import (
    PackedWeight,
    can_pack,
    int8_input_bits,
    int8_supported,
    packs,
    padded_rows,
    quantize_packed_weights,
)

pytestmark = pytest.mark.skipif(not packs(torch.float32), reason="needs PyTorch with oneDNN")
BF16 = pytest.mark.skipif(not packs(torch.bfloat16), reason="this CPU has no oneDNN bf16")
INT8 = pytest.mark.skipif(not int8_supported(), reason="needs PyTorch's oneDNN int8 kernels")
# 8-bit weights and 8-bit inputs; a CPU without VNNI quantizes inputs to 7 bits, whose
# rounding step is twice as large.
INT8_TOLERANCE = 0.02 * 2 ** (8 - int8_input_bits())
VOCAB = 40


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _gru_packs_any_rows(monkeypatch) -> None:
    """These tests decode two sentences; the GRU packs from 12 rows, here from 1."""
    monkeypatch.setattr(s2s_cells.gru, "_PACKED_STEP_MIN_ROWS", 1)


@pytest.mark.parametrize("shape", [(7, 12), (3, 1, 12), (20, 12)])
@pytest.mark.parametrize("activation", ["none", "tanh"])
@pytest.mark.parametrize("bf16_max_rows", [None, 3])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-5), pytest.param(torch.bfloat16, 1e-2, marks=BF16)]
)
def test_packed_linear_computes_the_plain_layer(
    shape: tuple[int, ...],
    activation: str,
    bf16_max_rows: int | None,
    dtype: torch.dtype,
    tolerance: float,
) -> None:
    x, weight, bias = torch.randn(shape), torch.randn(9, 12), torch.randn(9)
    x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    expected = F.linear(x.float(), weight.float(), bias.float())
    expected = torch.tanh(expected) if activation == "tanh" else expected
    with torch.no_grad():
        packed = PackedWeight(bf16_max_rows).linear(x, weight, bias, activation)
    assert packed.dtype == dtype and packed.shape == expected.shape
    torch.testing.assert_close(packed.float(), expected, atol=tolerance, rtol=tolerance)


def int8_weight() -> PackedWeight:
    packed = PackedWeight()
    packed.int8 = True
    return packed


def relative_error(y: torch.Tensor, expected: torch.Tensor) -> float:
    return float((y - expected).norm() / expected.norm())


@INT8
@pytest.mark.parametrize("shape", [(7, 12), (3, 1, 12), (45, 12)])
@pytest.mark.parametrize("activation", ["none", "tanh"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_int8_linear_is_near_the_plain_layer(
    shape: tuple[int, ...], activation: str, with_bias: bool
) -> None:
    x, weight = torch.randn(shape), torch.randn(9, 12)
    bias = torch.randn(9) if with_bias else None
    expected = F.linear(x, weight, bias)
    expected = torch.tanh(expected) if activation == "tanh" else expected
    packed = int8_weight()
    with torch.no_grad():
        y = packed.linear(x, weight, bias, activation)
    assert not isinstance(packed._packed, torch.Tensor)  # an int8 copy, not oneDNN's fp32
    assert y.dtype == torch.float32 and y.shape == expected.shape
    assert relative_error(y, expected) < INT8_TOLERANCE


@INT8
def test_int8_copy_is_packed_again_when_the_weight_or_bias_changes() -> None:
    x, weight, bias = torch.randn(6, 12), torch.randn(9, 12), torch.randn(9)
    packed = int8_weight()
    with torch.no_grad():
        before = packed.linear(x, weight, bias)
        bias = bias + 10.0  # another bias: the int8 copy holds the bias too
        moved = packed.linear(x, weight, bias)
        weight.mul_(-2)  # same storage, new version
        after = packed.linear(x, weight, bias)
    torch.testing.assert_close(moved, before + 10.0, atol=1e-4, rtol=1e-4)
    assert relative_error(after, F.linear(x, weight, bias)) < INT8_TOLERANCE


def test_rows_are_padded_a_little_to_few_row_counts() -> None:
    """oneDNN builds a kernel per row count: a search's every multiple of the beam size
    should meet few of them, without computing many padding rows."""
    for rows in range(1, 5000):
        padded = padded_rows(rows)
        assert rows <= padded < rows + max(20, rows / 8)
    assert len({padded_rows(rows) for rows in range(5, 1001, 5)}) <= 30


def test_packed_weight_is_packed_again_after_an_in_place_change() -> None:
    x, weight = torch.randn(4, 6), torch.randn(5, 6)
    packed = PackedWeight()
    with torch.no_grad():
        before = packed.linear(x, weight)
        weight.mul_(-2)  # same storage, new version
        after = packed.linear(x, weight)
    torch.testing.assert_close(after, F.linear(x, weight))
    torch.testing.assert_close(after, -2 * before)


def test_only_cpu_inference_in_the_layers_precision_is_packed() -> None:
    x, weight = torch.randn(2, 3), torch.randn(4, 3)
    assert not can_pack(x, weight)  # gradients on: training
    with torch.no_grad():
        assert can_pack(x, weight)
        assert not can_pack(x.bfloat16(), weight)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # autocast would compute in bf16: an fp32 packed layer would bypass it
            assert not can_pack(x, weight)
            assert can_pack(x.bfloat16(), weight.bfloat16()) == packs(torch.bfloat16)
        with torch.backends.mkldnn.flags(enabled=False):
            assert not can_pack(x, weight)


def test_an_unknown_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="activation must be one of"), torch.no_grad():
        PackedWeight().linear(torch.randn(2, 3), torch.randn(4, 3), activation="relu")


def make_model(cell: str = "lstm", **options) -> Seq2Seq:
    config = ModelConfig(cell=cell, embed_size=16, hidden_size=24, dropout=0.0, **options)
    return Seq2Seq(config, cell_factory(cell, {}), VOCAB, VOCAB, 0, share_vocab=True)


def decode_log_probs(model: Seq2Seq, packed: bool) -> torch.Tensor:
    """Log-probs of teacher-forced search steps; gradients on keep the plain layers."""
    batch = collate([0, 1], [[5, 6, 7], [8, 9]], [[8, 9, 10, 11], [12, 13]])
    with torch.set_grad_enabled(not packed):
        return search_step_log_probs(model, batch)


def packed_layers_ran(model: Seq2Seq, cell_too: bool = True) -> bool:
    """Whether the output layer ran packed, and the first decoder cell did ``cell_too``."""
    cell = model.decoder.layers[0][0]
    cell_packed = {
        "lstm": lambda: [cell._decoding],
        "gru": lambda: [cell._packed_ih, cell._packed_hh],
        "crnn": lambda: [cell._packed_window, cell._packed_hh],
    }[model.config.cell]()
    cell_ran = [weight._packed is not None for weight in cell_packed]
    return model._packed_output._packed is not None and all(ran == cell_too for ran in cell_ran)


CELLS = pytest.mark.parametrize("cell", ["lstm", "gru", "crnn"])


@CELLS
@pytest.mark.parametrize("input_feeding", [False, True])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-5), pytest.param(torch.bfloat16, 5e-2, marks=BF16)]
)
def test_search_steps_on_packed_weights_match_the_plain_layers(
    cell: str, input_feeding: bool, dtype: torch.dtype, tolerance: float
) -> None:
    model = make_model(cell, input_feeding=input_feeding).to(dtype).eval()
    plain = decode_log_probs(model, packed=False)
    packed = decode_log_probs(model, packed=True)
    gru_cell_kept = cell == "gru" and dtype == torch.bfloat16  # no faster packed in bf16
    assert packed_layers_ran(model, cell_too=not gru_cell_kept)
    torch.testing.assert_close(packed, plain, atol=tolerance, rtol=tolerance)


@INT8
@CELLS
@pytest.mark.parametrize("input_feeding", [False, True])
def test_int8_search_steps_are_near_the_plain_layers(cell: str, input_feeding: bool) -> None:
    """decode.amp = "int8": every packed layer (output, combine, the cell's step) runs on
    int8 copies, and the next-token log-probs stay near fp32's."""
    model = make_model(cell, input_feeding=input_feeding).eval()
    plain = decode_log_probs(model, packed=False)
    assert quantize_packed_weights(model) >= 3
    int8 = decode_log_probs(model, packed=True)
    assert packed_layers_ran(model)
    assert not isinstance(model._packed_output._packed, torch.Tensor)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert (int8 - plain).abs().max() < 0.1
    assert (int8 - plain).abs().max() > 0  # quantized, not the fp32 layers


@CELLS
def test_decoding_after_training_steps_reads_the_new_weights(cell: str) -> None:
    """Fused optimisers change weights in place without bumping their versions: switching
    modes must drop the packed copies, or validation would decode the old weights."""
    model = make_model(cell, input_feeding=True).eval()
    before = decode_log_probs(model, packed=True)
    assert packed_layers_ran(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    batch = collate([0], [[5, 6, 7]], [[8, 9, 10, 11]])
    model.train()
    for _ in range(3):
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    after = decode_log_probs(model, packed=True)
    assert (after - before).abs().max() > 0.01
    torch.testing.assert_close(after, decode_log_probs(model, packed=False), atol=1e-5, rtol=1e-5)


@CELLS
@pytest.mark.parametrize("int8", [False, pytest.param(True, marks=INT8)])
def test_a_model_that_decoded_can_be_copied_and_saved(tmp_path, cell: str, int8: bool) -> None:
    """oneDNN's packed tensors cannot be copied or pickled: copies start without them (and
    an int8 model's copies pack int8 ones again)."""
    model = make_model(cell, input_feeding=True).eval()
    if int8:
        quantize_packed_weights(model)
    expected = decode_log_probs(model, packed=True)
    assert packed_layers_ran(model)
    copied = copy.deepcopy(model)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    for other in (copied, loaded):
        assert not packed_layers_ran(other)
        torch.testing.assert_close(decode_log_probs(other, packed=True), expected)


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=BF16)])
def test_only_bf16_layers_split_their_rows(monkeypatch, dtype: torch.dtype) -> None:
    """oneDNN's bf16 kernels for many rows are slow to build (s2s.kernels.packed_linear)."""
    calls = []
    one_call = packed_linear._padded_linear
    monkeypatch.setattr(
        packed_linear,
        "_padded_linear",
        lambda rows, *rest: calls.append(len(rows)) or one_call(rows, *rest),
    )
    x, weight = torch.randn(50, 12, dtype=dtype), torch.randn(9, 12, dtype=dtype)
    with torch.no_grad():
        y = PackedWeight(bf16_max_rows=20).linear(x, weight)
    assert y.shape == (50, 9)
    assert calls == ([20, 20, 10] if dtype == torch.bfloat16 else [50])


def test_a_gru_step_of_few_rows_keeps_gru_cell(monkeypatch) -> None:
    """Below _PACKED_STEP_MIN_ROWS one `gru_cell` call is faster than the packed step."""
    monkeypatch.setattr(s2s_cells.gru, "_PACKED_STEP_MIN_ROWS", 12)
    cell = cell_factory("gru", {})(6, 8).eval()
    rnn = cell.rnn
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    with torch.no_grad():
        for rows, packed in ((11, False), (12, True)):
            x, h = torch.randn(rows, 6), torch.randn(rows, 8)
            y, _ = cell.step(x, (h,))
            assert (cell._packed_ih._packed is not None) == packed
            torch.testing.assert_close(y, torch.gru_cell(x, h, *weights), atol=1e-5, rtol=1e-5)


def test_decoding_calls_in_a_row_keep_the_packed_copies(trained_run) -> None:
    """`s2s translate` fed a line at a time calls the translator per line: packing the
    weights again each time cost more than the line's search (s2s.kernels.packed_linear)."""
    from s2s.tasks.loading import load_run
    from s2s.tasks.translation.translator import Translator

    config, tokenizers, model, device = load_run(trained_run, None, "cpu")
    translator = Translator(model, tokenizers, config.decode, device)
    ids = translator.encode(["A man is riding a bicycle.", "Two dogs play."])
    first = translator.hypotheses(ids, beam_size=2)
    packed = model._packed_output._packed
    assert packed is not None
    assert translator.hypotheses(ids, beam_size=2) == first
    assert model._packed_output._packed is packed
    model.train()  # as training does between validations: its steps may change the weights
    translator.hypotheses(ids, beam_size=2)
    assert not model.training and model._packed_output._packed is not packed
    model.decoder.train()  # a part left training would decode with dropout
    translator.hypotheses(ids, beam_size=2)
    assert not any(module.training for module in model.modules())
