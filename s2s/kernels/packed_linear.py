"""Linear layers on weights kept in oneDNN's own layout, for decoding on the CPU.

`F.linear` hands oneDNN its weight in PyTorch's plain layout, and oneDNN repacks it into
its blocked layout at every call. A search step is small, so the repacking is a large part
of it: on this project's CPU (AMX), the 512 x 8 000 output layer of the peer benchmark
model took 0.85 ms for 160 rows in bf16 and 0.49 ms on a weight packed once, with the same
result to the bit; in fp32, 1.55 ms and 0.96 ms for 40 rows (`tools/bench_packed.py`).
oneDNN also applies tanh in the same pass, where PyTorch's bf16 tanh alone costs as much
as the matmul.

With ``int8`` set (`quantize_packed_weights`, for ``decode.amp = "int8"``) the copy is an
int8 one instead: weights quantized per output row once, each call's input quantized on the
fly (PyTorch's dynamic quantization on oneDNN), fp32 in and out. On an AMD EPYC (Zen 4,
AVX-512 VNNI, no AMX), 2 threads, the 512 x 8 000 output layer took 11.2 ms for 1 000 rows
in int8 and 19.9 in bf16, both packed (730 against 410 GFLOP/s), with the result 0.8 % off
fp32's against 0.17 % (`python tools/bench_packed.py --threads 2 --dtype int8 --rows 1000`).

Only inference uses this: the packed copy has no gradient, and it is packed again when the
weight's storage or in-place version changes. Fused optimisers update weights without
bumping the version, so the modules that own `PackedWeight`s drop them whenever they change
mode (`train()` / `eval()`, through `DropsPackedCopies`), and use them only in eval mode.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s.cpu import native_bf16

ACTIVATIONS = ("none", "tanh")
Packed = Tensor | torch.ScriptObject  # oneDNN's fp32/bf16 copy, or an int8 one

# oneDNN builds a kernel for every row count it meets (0.1-5 ms, growing with the rows), and
# a beam search meets every multiple of the beam size as sentences finish. Rows are padded
# to a multiple of ROW_BUCKET, a step that doubles whenever the rows pass 16 steps, so the
# padding stays under 1/8 of the rows past 320 and the kernels few: 29 row counts up to
# 1 000 rows instead of 1 000. Over 1 000 sentences (beam 5, bf16, 64-sentence batches) the
# first pass took 8-12 % less time, later ones 0-3 % more (docs/performance-log.md).
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
    return dtype == torch.bfloat16 and native_bf16()


@functools.cache
def int8_supported() -> bool:
    """Whether this build runs PyTorch's dynamic int8 linear layers on oneDNN (x86 builds
    do; oneDNN rather than fbgemm because it also uses AMX where a CPU has it). Tried on a
    tiny layer: PyTorch 2.13 deprecates the quantized tensors these layers are packed from,
    and a release without them makes this false, not a crash in the middle of a search."""
    quantized = getattr(torch.ops, "quantized", None)
    if not (
        packs(torch.float32)
        and "onednn" in torch.backends.quantized.supported_engines
        and hasattr(quantized, "linear_prepack")
        and hasattr(quantized, "linear_dynamic")
    ):
        return False
    try:
        y = torch.ops.quantized.linear_dynamic(
            torch.ones(1, 4), _int8_weight(torch.ones(2, 4), None), _reduce_range()
        )
    except (AttributeError, NotImplementedError, RuntimeError, TypeError):
        return False
    return bool(torch.allclose(y, torch.full((1, 2), 4.0), rtol=0.05))


@functools.cache
def _reduce_range() -> bool:
    """Quantize inputs to 7 bits on CPUs without VNNI, whose int8 products can overflow
    16-bit sums at 8 (as PyTorch's own x86 quantization settings do)."""
    has_vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    return not (has_vnni is not None and has_vnni())


def int8_input_bits() -> int:
    """The bits an int8 layer quantizes its input rows to on this CPU: 8 with VNNI, 7
    without, where an 8-bit product pair overflows (relative errors about twice as large:
    on an AMD EPYC Zen 3, 0.02 against fp32 on 512 x 8 000 where VNNI CPUs see 0.01)."""
    return 7 if _reduce_range() else 8


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
    int8 = False  # set by quantize_packed_weights

    def __init__(self, bf16_max_rows: int | None = None, pad_rows: bool = True) -> None:
        self.bf16_max_rows = bf16_max_rows
        self.pad_rows = pad_rows
        self._key: tuple | None = None
        self._packed: Packed | None = None

    def clear(self) -> None:
        """Forget the packed copy (its owner's weights may change unseen)."""
        self._key = self._packed = None

    # oneDNN's opaque tensors can be neither copied nor pickled: a copied or saved model
    # starts without the packed copy and packs its own weights when it first needs them.
    def __getstate__(self) -> dict:
        return {**vars(self), "_key": None, "_packed": None}

    def get(self, weight: Tensor) -> Packed:
        """The packed copy of ``weight`` [out, in]."""
        return self.get_built(source_key(weight), lambda: weight)

    def get_built(
        self, key: tuple, build: Callable[[], Tensor], int8_bias: Tensor | None = None
    ) -> Packed:
        """The packed copy of the weight ``build()`` returns, built again only when ``key``
        changes. For a weight assembled from others (the LSTM's ``[W_ih | W_hh]``): the
        assembled plain copy is not kept, only the key of its sources. An int8 copy takes
        ``int8_bias`` in (``key`` must then cover it), to add it in the same pass."""
        if self._packed is None or key != self._key:
            weight = build().detach()
            if self.int8:
                self._packed = _int8_weight(weight, int8_bias)
            else:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(weight)
            self._key = key
        return self._packed

    def linear(
        self, x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str = "none"
    ) -> Tensor:
        """``activation(F.linear(x, weight, bias))`` for x [..., in], on the packed weight;
        with ``pad_rows`` the rows are padded as `padded_rows` says and the padding cut off
        again."""
        if self.int8 and bias is not None:  # the bias goes into the int8 copy
            packed = self.get_built(source_key(weight, bias), lambda: weight, bias.detach())
            return self.linear_packed(x, packed, None, activation)
        return self.linear_packed(x, self.get(weight), bias, activation)

    def layer(self, layer: nn.Linear, x: Tensor) -> Tensor:
        """``layer(x)``, on this packed copy of its weight where that may run: the layer
        in eval mode and `can_pack` true (CPU inference); elsewhere the layer itself."""
        if not layer.training and can_pack(x, layer.weight):
            return self.linear(x, layer.weight, layer.bias)
        return layer(x)

    def linear_packed(
        self, x: Tensor, packed: Packed, bias: Tensor | None = None, activation: str = "none"
    ) -> Tensor:
        """`linear` on a weight this object already packed (`get` or `get_built`)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        bias = None if bias is None else bias.detach()
        rows = x.reshape(-1, x.size(-1))
        pad = self.pad_rows
        if not isinstance(packed, Tensor):  # an int8 copy
            y = _int8_linear(rows, packed, bias, activation, pad)
            return y.view(*x.shape[:-1], y.size(-1))
        limit = self.bf16_max_rows if packed.dtype == torch.bfloat16 else None
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
        for packed in packed_weights_of(self):
            packed.clear()
        return super().train(mode)  # type: ignore[misc]


def packed_weights_of(module: object) -> list[PackedWeight]:
    """The `PackedWeight`s a module keeps in its attributes (not in its submodules)."""
    return [value for value in vars(module).values() if isinstance(value, PackedWeight)]


def ensure_eval_mode(model: nn.Module) -> None:
    """Put ``model`` in eval mode unless it is there already: `DropsPackedCopies` drops
    the packed copies at every ``eval()``, and decoding calls that come one after another
    (`s2s translate` fed a line at a time) would pack them again for each. On the peer
    benchmark model (2-core AMD EPYC) that cost 79 ms instead of 22 a line in int8, and
    57 instead of 47 in fp32 (beam 5). Any module still training (a submodule switched on
    its own) puts the whole model in eval mode, as ``eval()`` always did."""
    if any(module.training for module in model.modules()):
        model.eval()


def quantize_packed_weights(model: nn.Module) -> int:
    """Have every `PackedWeight` of ``model``'s modules pack int8 copies from now on (for
    ``decode.amp = "int8"``); returns how many there are. Layers without one stay fp32."""
    found = [packed for module in model.modules() for packed in packed_weights_of(module)]
    for packed in found:
        packed.int8 = True
        packed.clear()
    return len(found)


@contextlib.contextmanager
def _quantized_engine(name: str) -> Iterator[None]:
    """PyTorch packs int8 weights for the engine set when it packs them (a global)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _int8_weight(weight: Tensor, bias: Tensor | None) -> torch.ScriptObject:
    """``weight`` [out, in] quantized symmetrically per output row (its largest magnitude
    maps to 127) and packed for oneDNN, with ``bias`` in fp32."""
    weight = weight.float()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zero_points = torch.zeros(weight.size(0), dtype=torch.long)
    with warnings.catch_warnings():  # the deprecation `int8_supported` is ready for
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quant")
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
    with _quantized_engine("onednn"):
        return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.float())


def _int8_linear(
    rows: Tensor, packed: torch.ScriptObject, bias: Tensor | None, activation: str, pad: bool
) -> Tensor:
    """`_padded_linear` on an int8 copy: the rows quantized together, to 8 bits (7 without
    VNNI), fp32 out. oneDNN builds a kernel per row count here too, so rows are padded."""
    count = rows.size(0)
    rows = _pad_rows(rows, pad)
    y = torch.ops.quantized.linear_dynamic(rows.float(), packed, _reduce_range())[:count]
    if bias is not None:
        y = y + bias.float()
    return tanh_in_place(y) if activation == "tanh" else y


def tanh_in_place(x: Tensor) -> Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1, computed in ``x``'s storage (which it overwrites):
    PyTorch's fp32 tanh on the CPU costs several times its sigmoid (on an AMD EPYC, 213-311
    us against 36-48 for 320 x 512; `LSTMCell.decoding_gate_update`)."""
    return torch.sigmoid_(x.mul_(2.0)).mul_(2.0).sub_(1.0)


def _pad_rows(rows: Tensor, pad: bool) -> Tensor:
    """``rows`` with zero rows added up to `padded_rows` when ``pad`` is set."""
    padding = padded_rows(rows.size(0)) - rows.size(0) if pad else 0
    return F.pad(rows, (0, 0, 0, padding)) if padding else rows


def _padded_linear(
    rows: Tensor, packed: Tensor, bias: Tensor | None, activation: str, pad: bool = True
) -> Tensor:
    """One oneDNN call on ``rows``, with ``pad`` padded to `padded_rows` and the padding
    cut off again."""
    count = rows.size(0)
    y = torch.ops.mkldnn._linear_pointwise(_pad_rows(rows, pad), packed, bias, activation, [], "")
    return y[:count]
