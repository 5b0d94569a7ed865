"""train.compile: a step-only cell's compiled step trains the same model as the eager
one; fused cells are left alone; a step torch cannot compile stops training at once. A
built-in cell's decoding step compiles too (tools/bench_cells.py --compile)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import Elman

from s2s.config import ModelConfig
from s2s.core.cell_registry import cell_factory
from s2s.core.seq2seq import Seq2Seq
from s2s.errors import S2SError
from s2s.train.compiling import compile_step_cells


def tiny_model(make_cell) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(embed_size=8, hidden_size=12, encoder_layers=1, decoder_layers=1)
    config.dropout = 0.0
    return Seq2Seq(config, make_cell, 20, 20, pad_id=0, share_vocab=True)


def loss_and_grads(model: Seq2Seq) -> tuple[torch.Tensor, list[torch.Tensor]]:
    src = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0], [4, 3, 0, 0]])
    lengths = torch.tensor([4, 3, 2])
    tgt = torch.tensor([[1, 5, 6], [1, 7, 0], [1, 9, 9]])
    loss = model(src, lengths, tgt).log_softmax(-1).sum()
    model.zero_grad()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_compiled_step_gives_the_eager_loss_and_gradients() -> None:
    eager = tiny_model(Elman)
    compiled = copy.deepcopy(eager)
    names = compile_step_cells(compiled)
    assert len(names) == 3  # both directions of the encoder, and the decoder
    assert all(p.grad is None for p in compiled.parameters())  # the warm-up left none
    want_loss, want_grads = loss_and_grads(eager)
    got_loss, got_grads = loss_and_grads(compiled)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-4)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fused_cells_are_left_alone() -> None:
    from s2s.core.cell_registry import cell_factory

    model = tiny_model(cell_factory("lstm", {}))
    assert compile_step_cells(model) == []


def test_a_step_that_cannot_compile_is_a_one_line_error(monkeypatch) -> None:
    def no_compiler(function, **options):
        def run(*args):
            raise RuntimeError("InductorError: no working C++ compiler found\ndetails")

        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.raises(S2SError) as caught:
        compile_step_cells(tiny_model(Elman))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.compile: cannot compile the step of cell encoder.")
    assert "no working C++ compiler found" in message and "train.compile = false" in message


@pytest.mark.parametrize("name", ["lstm", "gru", "crnn"])
def test_a_built_in_decoding_step_compiles(name: str) -> None:
    """In CPU inference these steps run on oneDNN's packed weights, which inductor cannot
    lower: compiled, they keep the plain layers and give the eager step's result."""
    torch.manual_seed(0)
    cell = cell_factory(name, {})(6, 8).eval()
    state = cell.initial_state(16)  # GRU packs from 12 rows
    state = tuple(torch.randn_like(part) for part in state)
    x_t = torch.randn(16, 6)
    with torch.no_grad():
        expected, _ = cell.step(x_t, state)
        got, _ = torch.compile(cell.step, dynamic=False)(x_t, state)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
