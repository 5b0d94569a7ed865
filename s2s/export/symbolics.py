"""ONNX translations of the operators that the TorchScript exporter lacks and s2s's models
use: `torch.logaddexp` (the copy mechanism's mixture, s2s.core.copy_attention)."""

from __future__ import annotations

import torch

OPSET = 17


def _logaddexp(g, a, b):
    """log(e^a + e^b) = max(a, b) + log(1 + e^-|a - b|), stable for large |a - b|."""
    one = g.op("Constant", value_t=torch.tensor(1.0))
    gap = g.op("Neg", g.op("Abs", g.op("Sub", a, b)))
    return g.op("Add", g.op("Max", a, b), g.op("Log", g.op("Add", one, g.op("Exp", gap))))


def register_symbolics() -> None:
    """Make the missing operators exportable (idempotent: registering again replaces)."""
    torch.onnx.register_custom_op_symbolic("aten::logaddexp", _logaddexp, OPSET)
