"""How a new model's parameters start (`model.init`).

"pytorch" keeps what each layer sets for itself: N(0, 1) embeddings, uniform in
±1/sqrt(hidden) for recurrent weights, Kaiming-uniform for linear layers.
"uniform" (the default) draws every parameter of the core's own layers from
U(-init_range, init_range) and asks each cell to do the same to its own through
`RecurrentCell.init_uniform`, which a cell overrides to keep its own initialisation (the
built-in LSTM keeps a `forget_bias` that is set). It is the initialisation of OpenNMT-py
(`param_init 0.1`) and of fairseq's LSTM models. The OpenNMT-py benchmark model (untied
embeddings, input feeding, Adam at 1e-3) needs it: 39.0 BLEU after 3 000 steps against
23.9 with "pytorch", and recipes/mt.toml 38.68 test BLEU against 36.67
(docs/performance.md, "The peer BLEU gap"). The recipes not measured with it set
"pytorch". The built-in cells with their default options draw exactly what they drew
when every parameter was redrawn here.

It runs once, when training builds a model from scratch; a resumed or loaded model gets
its saved weights instead.
"""

from __future__ import annotations

import torch
from torch import nn

from s2s.cells import RecurrentCell
from s2s.config import ModelConfig


def initialise(model: nn.Module, config: ModelConfig) -> nn.Module:
    """Re-draw `model`'s parameters as `config.init` says; returns the model."""
    if config.init == "uniform":
        uniform_init(model, config.init_range)
    return model


@torch.no_grad()
def uniform_init(model: nn.Module, bound: float) -> None:
    """Every parameter from U(-bound, bound), a cell's as its `init_uniform` says; embedding
    padding rows stay zero, as `nn.Embedding` leaves them, so padding adds nothing to what
    the encoder reads.

    Parameters are visited in the model's order and a cell is asked when its first one
    comes, so a cell that keeps the default draws the same numbers as when every parameter
    was drawn here (the recipes' scores were measured that way).
    """
    owners = cell_of_each_parameter(model)
    asked: set[int] = set()
    for parameter in model.parameters():  # shared (tied) parameters come once
        cell = owners.get(id(parameter))
        if cell is None:
            parameter.uniform_(-bound, bound)
        elif id(cell) not in asked:
            asked.add(id(cell))
            cell.init_uniform(bound)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()


def cell_of_each_parameter(model: nn.Module) -> dict[int, RecurrentCell]:
    """The outermost cell holding each parameter, by the parameter's id."""
    owners: dict[int, RecurrentCell] = {}
    for module in model.modules():  # outer modules before the ones inside them
        if isinstance(module, RecurrentCell):
            for parameter in module.parameters():
                owners.setdefault(id(parameter), module)
    return owners
