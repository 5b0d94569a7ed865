"""Mixed precision: bf16 autocast where the device supports it, fp16 with a gradient
scaler otherwise on CUDA; fp32 on CPU unless bf16 is asked for. Decoding on the CPU may also
run its matmuls in int8 (``decode.amp = "int8"``, s2s.kernels.packed_linear), the rest in fp32."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

import torch
from torch import nn

from s2s.config import Config
from s2s.cpu import native_bf16
from s2s.errors import S2SError
from s2s.kernels.packed_linear import int8_supported, packs, quantize_packed_weights

log = logging.getLogger("s2s.kernels.precision")


def resolve_amp(amp: str, device: torch.device, key: str = "train.amp") -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting (``train.amp``, ``decode.amp``), or None
    for fp32."""
    if amp == "off":
        return None
    if amp == "int8":  # decoding only (the config allows it nowhere else): fp32 around it
        _check_int8(device, key)
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise S2SError(f"{key} = 'fp16' needs a CUDA device (use 'bf16' or 'off' on CPU)")
    if amp == "bf16" and device.type == "cpu" and not native_bf16():
        _warn_emulated_bf16(key)
    return torch.bfloat16 if amp == "bf16" else torch.float16


@functools.cache
def _warn_emulated_bf16(key: str) -> None:
    """Once per key: bf16 on a CPU without it in hardware works, but recipes/mt.toml
    trained 16x slower than in fp32 on an AVX2-only AMD EPYC (136 against 2 157 tok/s)."""
    log.warning(
        "%s = 'bf16': this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is "
        "emulated and many times slower than fp32 here; use 'off'",
        key,
    )


def _check_int8(device: torch.device, key: str) -> None:
    if device.type != "cpu":
        raise S2SError(
            f"{key} = 'int8' runs on the CPU only: decode with --device cpu, or use 'bf16' "
            "or 'fp16' on CUDA"
        )
    if not int8_supported():
        raise S2SError(
            f"{key} = 'int8' needs PyTorch's oneDNN int8 kernels, which this build of torch "
            "lacks (x86 builds have them); use 'bf16' or 'off'"
        )


def precision_name(dtype: torch.dtype | None, amp: str | None = None) -> str:
    """The name of a `resolve_amp` result, as benchmarks report it: fp32, bf16 or fp16, or
    int8 for ``amp`` "int8" (whose activations are fp32)."""
    if amp == "int8":
        return "int8"
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def decoding_precision(amp: str, device: torch.device, key: str = "decode.amp") -> str:
    """What decode.amp ``amp`` decodes in on ``device``: fp32, bf16, fp16 or int8 (an
    impossible choice is an error naming ``key``)."""
    return precision_name(resolve_amp(amp, device, key), amp)


def autocast_factory(
    dtype: torch.dtype | None, device: torch.device
) -> Callable[[], AbstractContextManager]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def decode_autocast(amp: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The autocast context for decoding under ``decode.amp`` (fp16 without CUDA is an
    error, raised here so a decoder built with it fails before any input is read)."""
    return autocast_factory(resolve_amp(amp, device, "decode.amp"), device)


def cast_for_decoding(model: nn.Module, amp: str, device: torch.device) -> nn.Module:
    """Store the weights of a model loaded only to decode in ``amp``'s precision
    (decode.amp's values). Autocast casts each weight of every matmul and LSTM again at
    every decoder step; on this project's CPU those casts took a fifth of bf16 beam
    search. Autocast still runs softmax and log_softmax in fp32 over the cast weights.
    For int8 the weights stay fp32 and the layers that pack their weights for CPU decoding
    pack int8 copies (s2s.kernels.packed_linear); an encoder runs in bf16 autocast where the CPU
    has native bf16 (`Seq2Seq.encoder_states`)."""
    dtype = resolve_amp(amp, device, "decode.amp")
    if amp == "int8":
        quantize_packed_weights(model)
        if hasattr(model, "encode_in_bf16"):  # an encoder-decoder (s2s.core.seq2seq)
            model.encode_in_bf16 = packs(torch.bfloat16)
        return model
    return model if dtype is None else model.to(dtype)


def make_grad_scaler(dtype: torch.dtype | None, device: torch.device):
    """fp16 needs loss scaling against underflow; bf16 and fp32 do not."""
    enabled = dtype == torch.float16 and device.type == "cuda"
    return torch.amp.GradScaler("cuda", enabled=enabled)


# oneDNN caches one primitive per tensor shape (1 024 by default). Token-budget batches bring
# hundreds of shapes, and a bf16 LSTM training primitive holds megabytes: with the default,
# bf16 training on the CPU grew past 4 GB of memory in 1 500 steps of recipes/mt.toml. 64
# keeps it flat, and building a training primitive again costs nothing measurable next to
# running it. Decoding is the opposite: its primitives are small, but a beam search of 1 000
# sentences brings about 600 shapes of cheap steps, and under a cap of 64 rebuilding them
# made bf16 beam search 1.3-1.5x slower (docs/performance-log.md). Only training is capped.
ONEDNN_CACHE_CAPACITY = "64"


def limit_onednn_cache() -> None:
    """Cap oneDNN's primitive cache for training, unless the user set
    ONEDNN_PRIMITIVE_CACHE_CAPACITY. oneDNN reads the variable once, when it first builds a
    primitive: call this before any computation (`s2s train` does it first thing)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)


LoadedModel = TypeVar("LoadedModel", bound=nn.Module)


def ready_to_decode(
    model: LoadedModel, config: Config, device: torch.device, amp: str | None, cast_weights: bool
) -> LoadedModel:
    """``model`` in eval mode on ``device``, for the loaders of text and speech runs:
    ``amp`` replaces the config's decode.amp, and the weights are stored in that precision
    unless ``cast_weights`` is off (for scoring as training does, in fp32 weights)."""
    config.decode.amp = amp or config.decode.amp
    model = model.to(device).eval()
    if cast_weights:
        model = cast_for_decoding(model, config.decode.amp, device)
    return model
