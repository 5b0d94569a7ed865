"""The conformance kit catches each kind of broken cell, names the property, and says by how
much; a correct step-only cell passes every check through the default loop."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pytest
import torch
from helpers import Elman
from torch import Tensor, nn

from s2s.cells import RecurrentCell, keep_finished
from s2s.config import ModelConfig
from s2s.core.search import BeamSearch, max_output_lengths
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate
from s2s.testing import CHECKS, CellContractError, check_cell


class DriftingSequence(Elman):
    """Its 'fused' path is off by 1e-3 from the stepwise path."""

    def forward(self, x, state=None, lengths=None):
        y, final = super().forward(x, state, lengths)
        return y + 1e-3, final


class DriftingStepper(Elman):
    """Its training stepper is off by 1e-3 from step."""

    def stepper(self):
        return lambda x_t, state: (lambda h, s: (h + 1e-3, s))(*self.step(x_t, state))


class IgnoresLengths(Elman):
    def forward(self, x, state=None, lengths=None):
        return super().forward(x, state, None)


class TimeNormalised(Elman):
    """Centres inputs over each sequence's real steps: right with lengths, but without them
    the mean takes in the padding, which the core does pass (encoders run unmasked)."""

    def forward(self, x, state=None, lengths=None):
        ends = torch.full((x.size(0),), x.size(1)) if lengths is None else lengths
        real = (torch.arange(x.size(1)) < ends.view(-1, 1)).unsqueeze(-1)  # B x T x 1
        mean = (x * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)
        return super().forward(x - mean, state, lengths)


class BatchNormalised(Elman):
    """Normalises inputs over the batch: rows leak into each other."""

    def step(self, x_t, state):
        return super().step(x_t - x_t.mean(0, keepdim=True), state)


class ScaledByBatchSpread(Elman):
    """Divides inputs by their spread over the batch: NaN for a batch of one row (the
    reference side when a row is run alone), which greedy decoding of one sentence is."""

    def step(self, x_t, state):
        return super().step(x_t / (1.0 + x_t.std(0, keepdim=True)), state)


class _HalvedGradient(torch.autograd.Function):
    """Identity forward whose backward is wrong by a factor of two."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad / 2


class WrongCustomBackward(Elman):
    """A 'fused' forward through a custom autograd.Function with a wrong backward: its
    outputs equal the stepwise path's, its gradients do not."""

    def forward(self, x, state=None, lengths=None):
        return super().forward(_HalvedGradient.apply(x), state, lengths)


class DetachesTheState(Elman):
    """A 'fused' forward that cuts the state off the graph at every step: same outputs,
    no gradient through time."""

    def forward(self, x, state=None, lengths=None):
        if state is None:
            state = self.initial_state(x.size(0), device=x.device, dtype=x.dtype)
        outputs = []
        for t, x_t in enumerate(x.unbind(1)):
            h, new_state = self.step(x_t, tuple(s.detach() for s in state))
            if lengths is not None:
                new_state = keep_finished(new_state, state, lengths > t)
            state = new_state
            outputs.append(h)
        return torch.stack(outputs, dim=1), state


class ElmanState(NamedTuple):
    hidden: Tensor


class NamedTupleState(Elman):
    """Keeps its state in a NamedTuple and reads it by field name."""

    def initial_state(self, batch_size, *, device=None, dtype=None, hidden=None):
        return ElmanState(
            *super().initial_state(batch_size, device=device, dtype=dtype, hidden=hidden)
        )

    def step(self, x_t, state):
        h = self.candidate(x_t, state.hidden)
        return h, ElmanState(h)


class TimeMajorState(Elman):
    """Keeps h as [H, B]: the core could not reorder or mask it."""

    def initial_state(self, batch_size, *, device=None, dtype=None, hidden=None):
        if hidden is None:
            hidden = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return (hidden.t(),)

    def step(self, x_t, state):
        h = self.candidate(x_t, state[0].t())
        return h, (h.t(),)


class UnusedParameter(Elman):
    def __init__(self, input_size: int, hidden_size: int, scale: float = 1.0) -> None:
        super().__init__(input_size, hidden_size, scale)
        self.unused = nn.Linear(hidden_size, hidden_size)


class LerpMixesDtypes(Elman):
    """torch.lerp wants equal dtypes: an fp32 state and a bf16 candidate break autocast."""

    def step(self, x_t, state):
        h = torch.lerp(state[0], self.candidate(x_t, state[0]), 0.5)
        return h, (h,)


class PlainTensorAttribute(Elman):
    """A random tensor kept outside state_dict: a reloaded cell computes something else."""

    def __init__(self, input_size: int, hidden_size: int, scale: float = 1.0) -> None:
        super().__init__(input_size, hidden_size, scale)
        self.gain = torch.rand(hidden_size) + 0.5

    def step(self, x_t, state):
        h = self.candidate(x_t, state[0]) * self.gain
        return h, (h,)


class MisdeclaredOptions(Elman):
    options: ClassVar[dict[str, Any]] = {"scale": 2.0, "depth": 1}


class WrongOutputWidth(Elman):
    def step(self, x_t, state):
        h, new_state = super().step(x_t, state)
        return torch.cat([h, h], dim=-1), new_state


def contract_failures(cls: type[RecurrentCell], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(CellContractError) as caught:
        check_cell(cls, **kwargs)
    message = str(caught.value)
    for name, text in caught.value.failures.items():
        assert f"\n  {name}: {text}" in message
    return caught.value.failures


def test_a_correct_step_only_cell_passes_every_check() -> None:
    check_cell(Elman)
    check_cell(Elman, scale=0.5, input_size=3, hidden_size=9)


def test_a_stepper_that_drifts_from_step_is_reported() -> None:
    failures = contract_failures(DriftingStepper, checks=["stepper"])
    assert re.search(r"stepper output vs step differs by 0\.001 ", failures["stepper"])


def test_sequence_path_drift_is_reported_with_its_size() -> None:
    failures = contract_failures(DriftingSequence, checks=["step_vs_sequence"])
    assert re.search(
        r"sequence output vs stepwise differs by 0\.001 ", failures["step_vs_sequence"]
    )


def test_ignoring_lengths_breaks_padding_invariance() -> None:
    failures = contract_failures(IgnoresLengths)
    assert set(failures) == {"padding", "gradients"}  # the final state's gradients differ too
    assert re.search(r"final state\[0\] differs by \d", failures["padding"])


def test_outputs_that_see_later_padding_are_caught_even_without_lengths() -> None:
    failures = contract_failures(TimeNormalised, checks=["padding"])
    assert "output without lengths differs by" in failures["padding"]


def test_mixing_rows_breaks_batch_independence() -> None:
    failures = contract_failures(BatchNormalised, checks=["batch_independence"])
    assert "batched vs alone differs by" in failures["batch_independence"]


def test_a_state_without_the_batch_first_is_caught() -> None:
    failures = contract_failures(TimeMajorState, checks=["structure", "reorder"])
    assert "batch (4) first" in failures["structure"]
    assert "reorder" in failures


def test_a_parameter_without_gradient_is_named() -> None:
    failures = contract_failures(UnusedParameter)
    assert set(failures) == {"gradients"}
    assert "['unused.weight', 'unused.bias']" in failures["gradients"]


def test_a_dtype_error_under_autocast_is_reported() -> None:
    failures = contract_failures(LerpMixesDtypes)
    assert set(failures) == {"autocast"}
    assert "raised RuntimeError" in failures["autocast"]


def test_state_outside_state_dict_fails_the_checkpoint_round_trip() -> None:
    failures = contract_failures(PlainTensorAttribute)
    assert set(failures) == {"checkpoint"}
    assert "after a checkpoint round trip differs by" in failures["checkpoint"]


def test_declared_options_must_match_the_constructor() -> None:
    failures = contract_failures(MisdeclaredOptions, checks=["options"])
    assert "not accepted ['depth']" in failures["options"]


def test_output_width_must_match_output_size() -> None:
    failures = contract_failures(WrongOutputWidth, checks=["structure"])
    assert "step output has shape (4, 12)" in failures["structure"]


def test_a_crashing_cell_is_a_failure_not_an_error() -> None:
    failures = contract_failures(RecurrentCell, checks=["step_vs_sequence"])
    assert "raised NotImplementedError" in failures["step_vs_sequence"]


def test_unknown_check_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown checks"):
        check_cell(Elman, checks=["stepwise"])


def test_the_kit_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    check_cell(Elman, checks=["structure", "checkpoint"])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("check", CHECKS)
def test_checks_can_be_run_one_by_one(check: str) -> None:
    check_cell(Elman, checks=[check])


# The walk-through in docs/cells.md must keep working: its code blocks are run here.

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cells.md"


def docs_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)


def test_the_documented_example_cell_keeps_the_contract(monkeypatch) -> None:
    _, cell_source, test_source, forward_source = docs_blocks("python")
    package = types.ModuleType("s2s_indrnn")
    exec(compile(cell_source, "docs/cells.md: the cell", "exec"), package.__dict__)
    check_cell(package.IndRNNCell)
    assert not package.IndRNNCell.has_fused_forward
    cell = package.IndRNNCell(3, 50)
    recurrent = cell.recurrent.detach().clone()
    cell.init_uniform(0.01)  # its recurrent weights keep their own range
    assert torch.equal(cell.recurrent, recurrent) and cell.input.weight.abs().max() <= 0.01
    # the faster forward of section 4, added to the class
    namespace = dict(package.__dict__)
    fast = "class FastIndRNNCell(IndRNNCell):\n" + forward_source
    exec(compile(fast, "docs/cells.md: forward", "exec"), namespace)
    check_cell(namespace["FastIndRNNCell"], activation="tanh")
    assert namespace["FastIndRNNCell"].has_fused_forward
    # the documented test file, run against the documented cell
    monkeypatch.setitem(sys.modules, "s2s_indrnn", package)
    tests: dict[str, Any] = {}
    exec(compile(test_source, "docs/cells.md: the tests", "exec"), tests)
    for check in CHECKS:
        tests["test_indrnn_keeps_the_contract"](check)
    tests["test_indrnn_with_tanh_keeps_the_contract"]()


def test_the_documented_constrained_cell_stays_within_its_bound() -> None:
    """docs/cells.md's parametrized IndRNN passes the kit, and no optimiser step, however
    large, takes a recurrent weight it computes with past ``recurrent_max``."""
    bounded_source, cell_source, _, _ = docs_blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(cell_source, "docs/cells.md: the cell", "exec"), namespace)
    exec(compile(bounded_source, "docs/cells.md: the bounded cell", "exec"), namespace)
    cell_class = namespace["BoundedIndRNNCell"]
    check_cell(cell_class, recurrent_max=0.5)
    cell = cell_class(3, 8, recurrent_max=0.5)
    optimizer = torch.optim.SGD(cell.parameters(), lr=100.0)
    y, _ = cell(torch.randn(2, 5, 3))
    (-y.sum()).backward()
    optimizer.step()
    assert cell.recurrent.abs().max() <= 0.5
    assert "parametrizations.recurrent.original" in cell.state_dict()


def test_the_documented_pyproject_registers_the_cell() -> None:
    pyproject = tomllib.loads(docs_blocks("toml")[1])
    assert pyproject["project"]["entry-points"]["s2s.cells"] == {"indrnn": "s2s_indrnn:IndRNNCell"}


@pytest.mark.filterwarnings("ignore:std")  # NaN at one row is the point
def test_nan_at_batch_size_one_fails_even_on_the_reference_side() -> None:
    failures = contract_failures(ScaledByBatchSpread, checks=["step_vs_sequence"])
    assert "batch size 1, from a zero state" in failures["step_vs_sequence"]
    assert "is not finite" in failures["step_vs_sequence"]
    failures = contract_failures(ScaledByBatchSpread, checks=["batch_independence"])
    assert "(the reference side) is not finite" in failures["batch_independence"]


def test_a_wrong_custom_backward_in_the_fused_forward_is_caught() -> None:
    failures = contract_failures(WrongCustomBackward)
    assert set(failures) == {"gradients"}
    assert "fused forward's gradient of the input vs stepwise differs" in failures["gradients"]


def test_a_fused_forward_that_detaches_the_state_is_caught() -> None:
    failures = contract_failures(DetachesTheState)
    assert set(failures) == {"gradients"}
    assert "fused forward's gradient of the input vs stepwise differs" in failures["gradients"]


def test_a_named_tuple_state_keeps_the_contract_and_beam_searches() -> None:
    check_cell(NamedTupleState)
    config = ModelConfig(
        cell="elman", embed_size=8, hidden_size=12, encoder_layers=1, decoder_layers=2,
        dropout=0.0,
    )  # fmt: skip
    model = Seq2Seq(config, NamedTupleState, 30, 30, 0, share_vocab=True).eval()
    batch = collate([0, 1], [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15]])
    limits = max_output_lengths(batch.src_lengths, 2.0, 3)
    with torch.no_grad():
        found = BeamSearch(3, nbest=2).search(model, batch.src, batch.src_lengths, limits)
    assert [len(hyps) for hyps in found] == [2, 2]


def test_the_documented_checks_are_the_kits() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"fails 1 of {len(CHECKS)} contract checks" in text
    assert re.findall(r"^\| `(\w+)` \|", text.split("The checks, in `CHECKS` order:")[1], re.M)[
        : len(CHECKS)
    ] == list(CHECKS)
