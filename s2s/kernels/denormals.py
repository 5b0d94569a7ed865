"""Denormal floats flushed to zero on the CPU, before torch starts its threads.

Saturated tanh and sigmoid units have derivatives below fp32's smallest normal number
(1.2e-38), and attention gives far-away source words probabilities that small. x86 CPUs
compute on such denormal numbers through a slow microcode path: in fp32 training of the
peer benchmark model on this project's CPU, a 64 x 512 by 64 x 1 024 weight-gradient matmul
took 4.0 ms instead of 0.24 ms, and matmuls of the encoder's keys 26-104 ms instead of a
few. Flushing them to zero (the CPU's FTZ and DAZ modes, `torch.set_flush_denormal`) loses
only values below 1.2e-38: training logged the same losses to the last digit either way.
TensorFlow's CPU thread pools do the same by default.

The mode belongs to each thread, and threads inherit it when they start: torch's OpenMP
threads start with the first parallel operation, so the `s2s` commands that compute set it
first thing. It also changes Python's own float arithmetic in that thread, so only the
s2s command's own process sets it, not `s2s.cli.main()` called from another program.
S2S_FLUSH_DENORMALS=0 keeps the CPU's default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from s2s.errors import S2SError
from s2s.kernels.env_switch import switch_on

SWITCH = "S2S_FLUSH_DENORMALS"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether S2S_FLUSH_DENORMALS asks for flushing (1, the default) or not (0)."""
    return switch_on(environ, SWITCH, on="flush denormals to zero", off="keep them")


def flush_denormals(environ: Mapping[str, str] = os.environ) -> bool:
    """Flush denormals to zero in this thread and the threads it starts from now on,
    unless S2S_FLUSH_DENORMALS=0; returns whether they are flushed (CPUs without the
    modes keep denormals). Call it before any parallel torch operation."""
    if not wanted(environ):
        return False
    try:
        import torch
    except ImportError:  # an exported model runs without torch (s2s.exported)
        return False
    return bool(torch.set_flush_denormal(True))


def flush_denormals_in_script(program: str) -> None:
    """`flush_denormals` for a script run as a program (the benchmark tools): a malformed
    switch ends it with one line naming ``program``."""
    try:
        flush_denormals()
    except S2SError as error:
        print(f"{program}: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None


def denormals_flushed() -> bool:
    """Whether this thread flushes denormals: run directories record it, since fp32
    training speed depends on it."""
    import torch

    return bool(torch.tensor([1e-39]).mul(1.0).item() == 0.0)
