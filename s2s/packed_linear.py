"""Linear layers on weights kept in oneDNN's own layout, for decoding on the CPU.

`F.linear` hands oneDNN its weight in PyTorch's plain layout, and oneDNN repacks it into
its blocked layout at every call. A search step is small, so the repacking is a large part
of it: on this project's CPU (AMX), the 512 x 8 000 output layer of the peer benchmark
model took 0.85 ms for 160 rows in bf16 and 0.49 ms on a weight packed once, with the same
result to the bit; in fp32, 1.55 ms and 0.96 ms for 40 rows (`tools/bench_packed.py`).
oneDNN also applies tanh in the same pass, where PyTorch's bf16 tanh alone costs as much
as the matmul.

Only inference uses this: the packed copy has no gradient, and it is packed again when the
weight's storage or in-place version changes. Fused optimisers update weights without
bumping the version, so the modules that own `PackedWeight`s drop them whenever they change
mode (`train()` / `eval()`, through `DropsPackedCopies`), and use them only in eval mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("none", "tanh")

# oneDNN builds a kernel for every row count it meets (0.1-5 ms, growing with the rows), and
# a beam search meets every multiple of the beam size as sentences finish. Rows are padded
# to a multiple of ROW_BUCKET, a step that doubles whenever the rows pass 16 steps, so the
# padding stays under 1/8 of the rows past 320 and the kernels few: 29 row counts up to
# 1 000 rows instead of 1 000. Over 1 000 sentences (beam 5, bf16, 64-sentence batches) the
# first pass took 8-12 % less time, later ones 0-3 % more (docs/performance.md).
ROW_BUCKET = 20


def padded_rows(rows: int) -> int:
    """The row count at which a layer computes ``rows`` rows (see ROW_BUCKET)."""
    step = ROW_BUCKET
    while rows > 16 * step:
        step *= 2
    return -(-rows // step) * step


@functools.cache
def packs(dtype: torch.dtype) -> bool:
    """Whether this build and CPU pack weights of ``dtype``. oneDNN's bf16 kernels need
    hardware support (else they run reference code, far slower than PyTorch's own)."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and bool(ops._is_mkldnn_bf16_supported())


def can_pack(x: Tensor, weight: Tensor) -> bool:
    """Whether ``x @ weight.T`` may run on a packed weight: CPU inference (no gradient),
    input and weight in the precision the layer would compute in. Under autocast that is
    autocast's: its fp32 weights are cast at every call, and the packed layer, which
    autocast does not see, would compute in fp32 instead. ``torch.backends.mkldnn.flags(
    enabled=False)`` turns it off, as it turns off PyTorch's own use of oneDNN, and so does
    torch.compile: code it compiles keeps the plain layers."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or weight.dim() != 2:
        return False
    if _compiling():  # inductor cannot lower oneDNN's packed tensors; it packs on its own
        return False
    if not torch.backends.mkldnn.enabled:
        return False
    if torch.is_autocast_enabled("cpu") and weight.dtype != torch.get_autocast_dtype("cpu"):
        return False
    return x.dtype == weight.dtype and packs(weight.dtype)


def _compiling() -> bool:
    """Whether torch.compile is tracing the caller (torch >= 2.3 can tell)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


def in_place_version(tensor: Tensor) -> int:
    """The in-place update count; tensors made in inference mode keep none."""
    return 0 if tensor.is_inference() else tensor._version


def source_key(*tensors: Tensor) -> tuple:
    """What a packed copy of (something built from) ``tensors`` depends on: their storage,
    in-place version, dtype and shape. A new key means the copy must be packed again."""
    return tuple((t.data_ptr(), in_place_version(t), t.dtype, tuple(t.shape)) for t in tensors)


class PackedWeight:
    """A weight packed once for oneDNN, and packed again when the weight changes.

    ``bf16_max_rows`` has a bf16 layer compute at most that many rows per oneDNN call. On
    this project's CPU (AMX) oneDNN's bf16 kernels take longer to build the more rows they
    take (0.2 ms for 20 rows, 5-12 ms for 600), and for some layers run slower over many
    rows than over a few calls of fewer (`tools/bench_packed.py --max-rows`).
    ``pad_rows`` False computes exactly the rows given: for training, whose batches keep
    one row count for a whole pass, so the padding would buy no fewer kernel builds."""

    bf16_max_rows: int | None = None  # also for copies pickled before it existed
    pad_rows = True

    def __init__(self, bf16_max_rows: int | None = None, pad_rows: bool = True) -> None:
        self.bf16_max_rows = bf16_max_rows
        self.pad_rows = pad_rows
        self._key: tuple | None = None
        self._packed: Tensor | None = None

    def clear(self) -> None:
        """Forget the packed copy (its owner's weights may change unseen)."""
        self._key = self._packed = None

    # oneDNN's opaque tensors can be neither copied nor pickled: a copied or saved model
    # starts without the packed copy and packs its own weights when it first needs them.
    def __getstate__(self) -> dict:
        return {**vars(self), "_key": None, "_packed": None}

    def get(self, weight: Tensor) -> Tensor:
        """The packed copy of ``weight`` [out, in]."""
        return self.get_built(source_key(weight), lambda: weight)

    def get_built(self, key: tuple, build: Callable[[], Tensor]) -> Tensor:
        """The packed copy of the weight ``build()`` returns, built again only when ``key``
        changes. For a weight assembled from others (the LSTM's ``[W_ih | W_hh]``): the
        assembled plain copy is not kept, only the key of its sources."""
        if self._packed is None or key != self._key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(build().detach())
            self._key = key
        return self._packed

    def linear(
        self, x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "none"
    ) -> Tensor:
        """``activation(F.linear(x, weight, bias))`` for x [..., in], on the packed weight;
        with ``pad_rows`` the rows are padded as `padded_rows` says and the padding cut off
        again."""
        return self.linear_packed(x, self.get(weight), bias, activation)

    def layer(self, layer: nn.Linear, x: Tensor) -> Tensor:
        """``layer(x)``, on this packed copy of its weight where that may run: the layer
        in eval mode and `can_pack` true (CPU inference); elsewhere the layer itself."""
        if not layer.training and can_pack(x, layer.weight):
            return self.linear(x, layer.weight, layer.bias)
        return layer(x)

    def linear_packed(
        self, x: Tensor, packed: Tensor, bias: Tensor | None = None, activation: str = "none"
    ) -> Tensor:
        """`linear` on a weight this object already packed (`get` or `get_built`)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        bias = None if bias is None else bias.detach()
        rows = x.reshape(-1, x.size(-1))
        limit = self.bf16_max_rows if packed.dtype == torch.bfloat16 else None
        pad = self.pad_rows
        if limit is None or rows.size(0) <= limit:
            y = _padded_linear(rows, packed, bias, activation, pad)
        else:
            pieces = rows.split(limit)
            y = torch.cat([_padded_linear(p, packed, bias, activation, pad) for p in pieces])
        return y.view(*x.shape[:-1], y.size(-1))


class DropsPackedCopies:
    """For an `nn.Module` that keeps `PackedWeight`s in its attributes: ``train()`` and
    ``eval()`` drop them all. Fused optimisers change weights in place without bumping
    their versions, so a copy packed before a training step would go on being used."""

    def train(self, mode: bool = True):
        for value in vars(self).values():
            if isinstance(value, PackedWeight):
                value.clear()
        return super().train(mode)  # type: ignore[misc]


def _padded_linear(
    rows: Tensor, packed: Tensor, bias: Tensor | None, activation: str, pad: bool = True
) -> Tensor:
    """One oneDNN call on ``rows``, with ``pad`` padded to `padded_rows` and the padding
    cut off again."""
    padding = padded_rows(rows.size(0)) - rows.size(0) if pad else 0
    if padding:
        rows = F.pad(rows, (0, 0, 0, padding))
    y = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, activation, [], "")
    return y[: rows.size(0) - padding]
