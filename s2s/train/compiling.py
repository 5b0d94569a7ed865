"""`train.compile`: torch.compile the `step` of cells that have no fused forward.

A cell that implements only `step` runs whole sequences through the default Python loop
of `RecurrentCell.forward`, one small kernel per operation per time step. Compiling
`step` fuses its element-wise work into a few kernels. Cells with a fused forward (the
built-in LSTM, GRU, RNN, CRNN) already run one kernel per sequence and are left alone.

Shapes are compiled as dynamic: token-budget batches change the batch size every step,
and static shapes would recompile for each new size until torch gives up.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from s2s.cells import RecurrentCell
from s2s.errors import S2SError

log = logging.getLogger("s2s.train")


def step_only_cells(model: nn.Module) -> list[tuple[str, RecurrentCell]]:
    """(name, cell) of every cell in ``model`` without a fused forward."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, RecurrentCell) and not module.has_fused_forward
    ]


def compile_step_cells(model: nn.Module) -> list[str]:
    """Replace ``step`` of each step-only cell by its compiled version and compile it now,
    forward and backward, on a two-row input, so a missing compiler or a step that torch
    cannot trace is an error before training starts. Returns the compiled cells' names."""
    names = []
    for name, cell in step_only_cells(model):
        compiled = torch.compile(cell.step, dynamic=True)
        _warm_up(name, cell, compiled)
        cell.step = compiled  # an instance attribute: the default forward loop calls it
        names.append(name)
    if names:
        log.info("train.compile: compiled the step of %d cells (%s)", len(names), names[0])
    return names


def _warm_up(name: str, cell: RecurrentCell, compiled) -> None:
    """Run ``compiled`` once with gradients, then drop the gradients it left."""
    parameter = next(cell.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    x_t = torch.zeros(2, cell.input_size, device=device, dtype=dtype, requires_grad=True)
    try:
        h_t, _ = compiled(x_t, cell.initial_state(2, device=device, dtype=dtype))
        h_t.sum().backward()
    except Exception as error:  # dynamo/inductor raise many types; all mean "cannot compile"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise S2SError(
            f"train.compile: cannot compile the step of cell {name} "
            f"({type(error).__name__}: {first[:200]}); set train.compile = false"
        ) from None
    finally:
        for p in cell.parameters():
            p.grad = None
