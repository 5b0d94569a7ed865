"""How a new model's parameters start (`model.init`).

"pytorch" keeps what each layer sets for itself: N(0, 1) embeddings, uniform in
±1/sqrt(hidden) for recurrent weights, Kaiming-uniform for linear layers.
"uniform" (the default) draws every parameter from U(-init_range, init_range), the
initialisation of OpenNMT-py (`param_init 0.1`) and of fairseq's LSTM models. The
OpenNMT-py benchmark model (untied embeddings, input feeding, Adam at 1e-3) needs it: 39.0
BLEU after 3 000 steps against 23.9 with "pytorch", and recipes/mt.toml 38.68 test BLEU
against 36.67 (docs/performance.md, "The peer BLEU gap"). The recipes not measured with
it set "pytorch".

It runs once, when training builds a model from scratch; a resumed or loaded model gets
its saved weights instead.
"""

from __future__ import annotations

import torch
from torch import nn

from s2s.config import ModelConfig


def initialise(model: nn.Module, config: ModelConfig) -> nn.Module:
    """Re-draw `model`'s parameters as `config.init` says; returns the model."""
    if config.init == "uniform":
        uniform_init(model, config.init_range)
    return model


@torch.no_grad()
def uniform_init(model: nn.Module, bound: float) -> None:
    """Every parameter from U(-bound, bound); embedding padding rows stay zero, as
    `nn.Embedding` leaves them, so padding adds nothing to what the encoder reads."""
    for parameter in model.parameters():  # shared (tied) parameters come once
        parameter.uniform_(-bound, bound)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
