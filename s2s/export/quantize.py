"""int8 weights for exported graphs: onnxruntime's dynamic quantisation (weights stored in
int8, activations quantised per call), which covers the MatMul, Gemm, LSTM and GRU nodes
that dominate a recurrent model's step."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from s2s.errors import S2SError


def quantize_graph(path: Path) -> None:
    """Replace the fp32 graph at ``path`` by its dynamically int8-quantised version."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(path.name + ".int8.tmp")
    logging.disable(logging.WARNING)  # its advice to pre-process is for image models
    try:
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8)
    except Exception as error:  # onnxruntime's quantiser raises its own types
        target.unlink(missing_ok=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise S2SError(f"{path}: int8 quantisation failed: {reason}") from None
    finally:
        logging.disable(logging.NOTSET)
    os.replace(target, path)
