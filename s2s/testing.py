"""Conformance kit for cell plugins: call it from your own pytest suite.

    from s2s.testing import CHECKS, check_cell

    def test_my_cell_keeps_the_contract():
        check_cell(MyCell, kernel_size=5)          # every check, options as in a recipe

    @pytest.mark.parametrize("check", CHECKS)      # or one test per property
    def test_contract(check):
        check_cell(MyCell, checks=[check])

Each check builds small cells (seeded, without touching the global RNG) and compares what
the core relies on; a failure names the property and how far off the cell was. The core
masks padding, reorders beams and saves checkpoints for every cell the same way, so these
properties are what makes a cell usable in any model.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from s2s.cells import RecurrentCell, State, rebuild_state
from s2s.core.decoding import select_rows

CHECKS = (
    "structure",
    "options",
    "step_vs_sequence",
    "padding",
    "batch_independence",
    "reorder",
    "gradients",
    "stepper",
    "autocast",
    "checkpoint",
)


class CellContractError(AssertionError):
    """A cell broke the contract; the message lists every failed property, and
    ``failures`` maps each failed check's name to what went wrong."""

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


class _Failure(Exception):
    """One property failed; the message says how."""


@dataclass
class _Case:
    """One cell class under test, with the sizes and tolerances the checks use."""

    cls: type[RecurrentCell]
    options: dict[str, Any]
    input_size: int
    hidden_size: int
    atol: float
    rtol: float
    device: torch.device
    batch_size: int = 4
    steps: int = 7
    seed: int = 0
    _generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)

    def build(self, seed: int | None = None) -> RecurrentCell:
        """A fresh cell, in eval mode, its weights drawn from a private seeded RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            cell = self.cls(self.input_size, self.hidden_size, **self.options)
        return cell.to(self.device).eval()

    def randn(self, *shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=self._generator) * scale).to(self.device)

    def inputs(self, batch: int | None = None, steps: int | None = None) -> Tensor:
        return self.randn(batch or self.batch_size, steps or self.steps, self.input_size)

    def lengths(self) -> Tensor:
        """Mixed lengths, the longest one full, none empty."""
        pattern = [self.steps, self.steps - 2, 1, self.steps - 1]
        values = [max(1, pattern[i % len(pattern)]) for i in range(self.batch_size)]
        return torch.tensor(values, device=self.device)

    def warm_state(self, cell: RecurrentCell, batch: int | None = None) -> State:
        """A non-trivial state: seeded start state, then a few steps of input."""
        batch = batch or self.batch_size
        seed = torch.tanh(self.randn(batch, cell.output_size))
        state = cell.initial_state(batch, device=self.device, dtype=torch.float32, hidden=seed)
        _, state = cell(self.inputs(batch, 3), state)
        return state

    def compare(self, what: str, actual: Tensor, expected: Tensor) -> None:
        if actual.shape != expected.shape:
            raise _Failure(
                f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
            )
        for side, tensor in (("", actual), (" (the reference side)", expected)):
            if not bool(torch.isfinite(tensor).all()):
                raise _Failure(f"{what}{side} is not finite")
        error = (actual.double() - expected.double()).abs()
        allowed = self.atol + self.rtol * expected.double().abs()
        if bool((error > allowed).any()):
            where = torch.unravel_index(error.argmax().cpu(), error.shape)
            raise _Failure(
                f"{what} differs by {error.max().item():.3g} (max abs; at index "
                f"{[int(i) for i in where]}; allowed {self.atol:.0e} + {self.rtol:.0e}*|expected|)"
            )

    def compare_states(self, what: str, actual: State, expected: State) -> None:
        if len(actual) != len(expected):
            raise _Failure(f"{what} has {len(actual)} tensors, expected {len(expected)}")
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            self.compare(f"{what}[{index}]", a, e)


def _run_steps(cell: RecurrentCell, x: Tensor, state: State) -> tuple[Tensor, State]:
    """The stepwise path over a whole sequence, as decoding runs it."""
    outputs = []
    for x_t in x.unbind(1):
        h, state = cell.step(x_t, state)
        outputs.append(h)
    return torch.stack(outputs, dim=1), state


def _rows(state: State, rows: slice) -> State:
    """Rows of a state, taken as beam search takes them (`select_rows`, type kept)."""
    index = torch.arange(rows.start, rows.stop, device=state[0].device)
    return select_rows(state, index)


def _check_structure(case: _Case) -> None:
    """Sizes, a tuple of batch-first tensors, and a seedable start state."""
    cell = case.build()
    batch = case.batch_size
    if not isinstance(cell.output_size, int) or cell.output_size < 1:
        raise _Failure(f"output_size must be a positive int, got {cell.output_size!r}")
    state = cell.initial_state(batch, device=case.device, dtype=torch.float32)
    if not isinstance(state, tuple) or not all(isinstance(t, Tensor) for t in state):
        raise _Failure(f"initial_state must return a tuple of tensors, got {type(state)}")
    if type(select_rows(state, torch.arange(batch, device=case.device))) is not type(state):
        raise _Failure(f"reordering rebuilds the state as another type than {type(state)}")
    shapes = [tuple(t.shape) for t in state]
    if any(not s or s[0] != batch for s in shapes):
        raise _Failure(f"state tensors must have the batch ({batch}) first, got {shapes}")
    seeded = cell.initial_state(
        batch, hidden=torch.ones(batch, cell.output_size, device=case.device)
    )
    if [tuple(t.shape) for t in seeded] != shapes:
        raise _Failure("initial_state(hidden=[B, output_size]) changes the state's shapes")
    x = case.inputs()
    h, stepped = cell.step(x[:, 0], state)
    if tuple(h.shape) != (batch, cell.output_size):
        raise _Failure(f"step output has shape {tuple(h.shape)}, expected [B, output_size]")
    if [tuple(t.shape) for t in stepped] != shapes:
        raise _Failure("step returns a state of other shapes than initial_state")
    y, final = cell(x)
    if tuple(y.shape) != (batch, case.steps, cell.output_size):
        raise _Failure(f"forward output has shape {tuple(y.shape)}, expected [B, T, output]")
    _, masked = cell(x, state, case.lengths())
    for name, returned in (("step", stepped), ("forward", final), ("forward(lengths)", masked)):
        if type(returned) is not type(state):
            raise _Failure(f"{name} returns a {type(returned)}, initial_state a {type(state)}")
    y_explicit, final_explicit = cell(x, state)
    case.compare("forward(x, initial_state) vs forward(x) output", y_explicit, y)
    case.compare_states("forward(x, initial_state) vs forward(x) state", final_explicit, final)


def _check_options(case: _Case) -> None:
    """``options`` lists exactly the constructor's keyword options, with the same defaults."""
    declared = case.cls.options
    if not isinstance(declared, dict):
        raise _Failure(f"options must be a dict of name -> default, got {type(declared)}")
    parameters = list(inspect.signature(case.cls.__init__).parameters.values())[3:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        raise _Failure("__init__ takes **kwargs: declare each option as a keyword parameter")
    actual = {p.name: p.default for p in parameters}
    missing = sorted(set(actual) - set(declared))
    extra = sorted(set(declared) - set(actual))
    if missing or extra:
        raise _Failure(
            f"options and __init__ disagree: not declared {missing}, not accepted {extra}"
        )
    for name, default in declared.items():
        if actual[name] is inspect.Parameter.empty or actual[name] != default:
            raise _Failure(
                f"option {name!r}: declared default {default!r}, __init__ default "
                f"{'none' if actual[name] is inspect.Parameter.empty else repr(actual[name])}"
            )


def _check_step_vs_sequence(case: _Case) -> None:
    """forward over a sequence equals looping step, from a zero and from a warm state, on
    a full batch and on one row (greedy decoding of one sentence runs at batch size 1)."""
    cell = case.build()
    for batch in (case.batch_size, 1):
        x = case.inputs(batch)
        with torch.no_grad():
            zero = cell.initial_state(batch, device=case.device, dtype=torch.float32)
            warm = case.warm_state(cell, batch)
            for name, state in (("zero state", zero), ("warm state", warm)):
                where = f"batch size {batch}, from a {name}"
                y, final = cell(x, state)
                y_steps, final_steps = _run_steps(cell, x, state)
                case.compare(f"{where}: sequence output vs stepwise", y, y_steps)
                case.compare_states(f"{where}: final state vs stepwise", final, final_steps)


def _check_padding(case: _Case) -> None:
    """Outputs at real positions ignore the padding after them, with ``lengths`` or without
    (the core runs encoders without them); with lengths the final state ignores it too."""
    cell = case.build()
    lengths = case.lengths()
    x = case.inputs()
    steps = torch.arange(case.steps, device=case.device).view(1, -1, 1)
    garbage = case.randn(*x.shape, scale=100.0)  # loud padding, so any leak shows
    x = torch.where(steps < lengths.view(-1, 1, 1), x, garbage)
    with torch.no_grad():
        state = case.warm_state(cell)
        y, final = cell(x, state, lengths)
        y_unmasked, _ = cell(x, state)
        for row, length in enumerate(lengths.tolist()):
            alone_y, alone = cell(x[row : row + 1, :length], _rows(state, slice(row, row + 1)))
            case.compare(f"row {row} (length {length}) output", y[row : row + 1, :length], alone_y)
            case.compare(
                f"row {row} (length {length}) output without lengths",
                y_unmasked[row : row + 1, :length],
                alone_y,
            )
            case.compare_states(
                f"row {row} (length {length}) final state",
                _rows(final, slice(row, row + 1)),
                alone,
            )


def _check_batch_independence(case: _Case) -> None:
    """A row's outputs do not depend on the other rows of its batch."""
    cell = case.build()
    x = case.inputs()
    x[1:] *= 50.0  # rows that would dominate any statistic taken over the batch
    with torch.no_grad():
        state = case.warm_state(cell)
        y, final = cell(x, state)
        h, _ = cell.step(x[:, 0], state)
        for row in range(case.batch_size):
            rows = slice(row, row + 1)
            alone_y, alone = cell(x[rows], _rows(state, rows))
            case.compare(f"sequence output of row {row}, batched vs alone", y[rows], alone_y)
            case.compare_states(f"final state of row {row}", _rows(final, rows), alone)
            alone_h, _ = cell.step(x[rows, 0], _rows(state, rows))
            case.compare(f"step output of row {row}, batched vs alone", h[rows], alone_h)


def _check_reorder(case: _Case) -> None:
    """Selecting state rows (beam search) equals recomputing from reordered inputs."""
    cell = case.build()
    index = torch.tensor([2, 0, 0, 1] * case.batch_size, device=case.device)[: case.batch_size]
    prefix, rest = case.inputs(), case.inputs()
    with torch.no_grad():
        _, state = cell(prefix)
        reordered = select_rows(state, index)
        _, recomputed = cell(prefix.index_select(0, index))
        case.compare_states("reordered state vs recomputed", reordered, recomputed)
        rest = rest.index_select(0, index)
        h, after = cell.step(rest[:, 0], reordered)
        h_ref, after_ref = cell.step(rest[:, 0], recomputed)
        case.compare("step output after reordering", h, h_ref)
        case.compare_states("state after a step after reordering", after, after_ref)
        y, _ = cell(rest, reordered)
        y_ref, _ = cell(rest, recomputed)
        case.compare("sequence output after reordering", y, y_ref)


def _state_loss(state: State) -> Tensor:
    return sum(t.float().square().mean() for t in state if t.is_floating_point())


def _path_gradients(
    case: _Case, cell: RecurrentCell, fused: bool, x: Tensor, start: State, weights: Tensor
) -> dict[str, Tensor | None]:
    """Gradients of one loss (``weights`` on the outputs) over the fused ``forward``, or the
    core's stepwise loop with its masking, for the input, each floating initial-state tensor
    and every parameter."""
    run = cell.forward if fused else partial(RecurrentCell.forward, cell)
    x = x.clone().requires_grad_()
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in start]
    lengths = case.lengths()
    cell.zero_grad(set_to_none=True)
    y, final = run(x, rebuild_state(start, leaves), lengths)
    real = torch.arange(case.steps, device=case.device).view(1, -1, 1) < lengths.view(-1, 1, 1)
    # padded outputs are unspecified
    ((y * torch.where(real, weights, 0.0)).sum() + _state_loss(final)).backward()
    grads: dict[str, Tensor | None] = {"the input": x.grad}
    grads.update({f"initial state[{i}]": t.grad for i, t in enumerate(leaves)})
    grads.update({name: p.grad for name, p in cell.named_parameters() if p.requires_grad})
    return grads


def _check_gradients(case: _Case) -> None:
    """Gradients reach every parameter and the input, and the fused ``forward`` gives the
    gradients of the stepwise path (input, initial state, every parameter)."""
    cell = case.build().train()
    x = case.inputs()
    with torch.no_grad():
        start = case.warm_state(cell)
    weights = case.randn(case.batch_size, case.steps, cell.output_size)
    expected = _path_gradients(case, cell, False, x, start, weights)
    missing = [name for name, grad in expected.items() if not _useful(grad)]
    missing = [name for name in missing if not name.startswith("initial state")]
    if missing:
        raise _Failure(f"stepwise path: no finite, non-zero gradient for {missing}")
    actual = _path_gradients(case, cell, True, x, start, weights)
    for name, grad in expected.items():
        if (grad is None) != (actual[name] is None):
            raise _Failure(f"gradient of {name}: fused forward and stepwise path disagree on None")
        if grad is not None:
            case.compare(f"fused forward's gradient of {name} vs stepwise", actual[name], grad)


def _useful(grad: Tensor | None) -> bool:
    return grad is not None and bool(torch.isfinite(grad).all()) and bool(grad.any())


def _check_stepper(case: _Case) -> None:
    """A training pass on ``stepper()`` gives the outputs, final state and gradients of one
    on ``step`` (the core steps the decoder with it when input feeding is on)."""
    cell = case.build().train()
    x = case.inputs()
    with torch.no_grad():
        start = case.warm_state(cell)
    results = []
    for name in ("stepper", "step"):
        cell.zero_grad(set_to_none=True)
        x_run = x.clone().requires_grad_()
        step, state, outputs = cell.stepper() if name == "stepper" else cell.step, start, []
        for x_t in x_run.unbind(1):
            h, state = step(x_t, state)
            outputs.append(h)
        y = torch.stack(outputs, dim=1)
        (y.square().mean() + _state_loss(state)).backward()
        grads = {n: p.grad for n, p in cell.named_parameters() if p.grad is not None}
        results.append((y.detach(), tuple(t.detach() for t in state), x_run.grad, grads))
    (y, final, x_grad, grads), (y_ref, final_ref, x_grad_ref, grads_ref) = results
    case.compare("stepper output vs step", y, y_ref)
    case.compare_states("stepper final state vs step", final, final_ref)
    case.compare("stepper input gradient vs step", x_grad, x_grad_ref)
    if grads.keys() != grads_ref.keys():
        raise _Failure(f"stepper gives gradients for {sorted(grads)}, step for {sorted(grads_ref)}")
    for name, grad in grads.items():
        case.compare(f"stepper gradient of {name} vs step", grad, grads_ref[name])


def _autocast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _check_autocast(case: _Case) -> None:
    """Under autocast (bf16 on CPU) every path runs, stays finite and close to fp32."""
    cell = case.build()
    x, lengths = case.inputs(), case.lengths()
    dtype = _autocast_dtype(case.device)
    loose = _Case(case.cls, case.options, case.input_size, case.hidden_size, 0.1, 0.1, case.device)
    reference = cell(x, None, lengths)[0].detach()
    with torch.autocast(case.device.type, dtype=dtype):
        y, final = cell(x, None, lengths)
        warm = case.warm_state(cell)
        y_steps, stepped = _run_steps(cell, x, warm)
        loss = y.float().square().mean() + y_steps.float().square().mean()
    for name, tensor in (("sequence output", y), ("stepwise output", y_steps)):
        if not tensor.is_floating_point():
            raise _Failure(f"{name} under autocast has dtype {tensor.dtype}")
    for index, t in enumerate((*final, *stepped)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _Failure(f"state tensor {index} under autocast is not finite")
    steps = torch.arange(case.steps, device=case.device).view(1, -1, 1)
    real = steps < lengths.view(-1, 1, 1)
    loose.compare(
        f"{dtype} sequence output vs fp32 (real positions)",
        torch.where(real, y.float(), 0.0),
        torch.where(real, reference, 0.0),
    )
    loss.backward()
    broken = [
        name
        for name, p in cell.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    if broken:
        raise _Failure(f"backward under autocast: gradients of {broken} are not finite")


def _check_checkpoint(case: _Case) -> None:
    """state_dict survives torch.save / torch.load(weights_only=True) into a fresh cell."""
    cell = case.build()
    buffer = io.BytesIO()
    torch.save(cell.state_dict(), buffer)
    buffer.seek(0)
    try:
        weights = torch.load(buffer, map_location=case.device, weights_only=True)
    except Exception as error:
        raise _Failure(f"torch.load(weights_only=True) refused the state_dict: {error}") from None
    fresh = case.build(seed=case.seed + 1)
    fresh.load_state_dict(weights)
    x, lengths = case.inputs(), case.lengths()
    with torch.no_grad():
        case.compare("output after a checkpoint round trip", fresh(x)[0], cell(x)[0])
        _, state_fresh = fresh(x, None, lengths)
        _, state_cell = cell(x, None, lengths)
        case.compare_states("final state after a checkpoint round trip", state_fresh, state_cell)
        state = cell.initial_state(case.batch_size, device=case.device, dtype=torch.float32)
        case.compare(
            "step output after a checkpoint round trip",
            fresh.step(x[:, 0], state)[0],
            cell.step(x[:, 0], state)[0],
        )


_CHECK_FUNCTIONS: dict[str, Callable[[_Case], None]] = {
    "structure": _check_structure,
    "options": _check_options,
    "step_vs_sequence": _check_step_vs_sequence,
    "padding": _check_padding,
    "batch_independence": _check_batch_independence,
    "reorder": _check_reorder,
    "gradients": _check_gradients,
    "stepper": _check_stepper,
    "autocast": _check_autocast,
    "checkpoint": _check_checkpoint,
}


def check_cell(
    cell_class: type[RecurrentCell],
    /,
    *,
    checks: Iterable[str] | None = None,
    input_size: int = 5,
    hidden_size: int = 6,
    batch_size: int = 4,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    device: str | torch.device = "cpu",
    cell_options: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """Run the conformance checks on ``cell_class`` built with ``options``.

    Raises CellContractError listing each failed property and by how much. ``checks``
    picks a subset of CHECKS; ``atol``/``rtol`` bound fp32 differences between paths that
    should agree (loosen them only for a cell whose paths reorder float operations a lot);
    ``batch_size`` > 3 sets the rows of every batch (a cell that switches kernels by batch
    size should be checked on both sides); ``cell_options`` passes options whose names
    clash with this function's parameters.
    """
    selected = list(CHECKS if checks is None else checks)
    unknown = [name for name in selected if name not in _CHECK_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")
    all_options = {**(cell_options or {}), **options}
    if batch_size < 4:
        raise ValueError("batch_size must be at least 4 (the checks mix lengths and rows)")
    case = _Case(
        cell_class,
        all_options,
        input_size,
        hidden_size,
        atol,
        rtol,
        torch.device(device),
        batch_size=batch_size,
    )
    failures: dict[str, str] = {}
    for name in selected:
        try:
            _CHECK_FUNCTIONS[name](case)
        except _Failure as failure:
            failures[name] = str(failure)
        except Exception as error:  # the cell crashed: that is the finding
            failures[name] = f"raised {type(error).__name__}: {error}"
    if failures:
        described = ", ".join(f"{k}={v!r}" for k, v in all_options.items())
        lines = "".join(f"\n  {name}: {text}" for name, text in failures.items())
        raise CellContractError(
            f"{cell_class.__name__}({described}) fails {len(failures)} of {len(selected)} "
            f"contract checks:{lines}",
            failures,
        )
