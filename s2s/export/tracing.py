"""Tracing a graph module to ONNX and checking the trace on another input: a trace records
the path the model took for its example, so a graph is only kept when onnxruntime gives the
model's outputs on a probe of another batch size and length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from s2s.errors import S2SError
from s2s.export.graphs import ENCODER_INPUTS
from s2s.export.symbolics import OPSET

TOLERANCE = 1e-4  # largest difference between a graph's outputs and the model's on the probe


def trace_onnx(
    graph: torch.nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    outputs: list[str],
    axes: dict[str, dict[int, str]],
    cell: str,
    inputs: list[str] = ENCODER_INPUTS,
) -> None:
    """torch.onnx.export (TorchScript) to ``path``; a failure is one line naming the cell."""
    try:
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    except Exception as error:  # the tracer raises anything a cell's code raises
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise S2SError(f"cannot export to ONNX (cell {cell!r}): {reason}") from None


def graph_matches(path: Path, expected: tuple[Tensor, ...], feeds: dict[str, Tensor]) -> bool:
    """Whether onnxruntime, on ``feeds``, gives the model's outputs to within TOLERANCE."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a graph that fails on the probe is an answer, not news
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    try:
        got = session.run(None, {k: v.numpy() for k, v in feeds.items() if k in wanted})
    except Exception:  # onnxruntime rejects shapes the trace fixed
        return False
    if len(got) != len(expected):
        return False
    return all(
        g.shape == e.shape and np.allclose(g, e.numpy(), atol=TOLERANCE, rtol=0)
        for g, e in zip(got, expected, strict=True)
    )
