"""What this CPU computes natively: probes asked by the cell contract (which must not
import the kernels) and by the kernels alike."""

from __future__ import annotations

import functools

import torch


@functools.cache
def native_bf16() -> bool:
    """Whether oneDNN computes bf16 in hardware on this CPU (AVX-512 BF16 or AMX). Without
    it oneDNN's bf16 kernels run reference code, and it has no bf16 LSTM at all."""
    if not torch.backends.mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return check is not None and bool(check())
