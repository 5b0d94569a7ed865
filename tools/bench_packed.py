"""Linear layers on plain against packed weights (s2s.kernels.packed_linear), as decoding runs them.

    python tools/bench_packed.py                          # bf16 and fp32, default layers
    python tools/bench_packed.py --dtype bf16 --layers 512x8000 1280x2048 --rows 40 160 320
    python tools/bench_packed.py --threads 2 --json packed.json
    python tools/bench_packed.py --layers 1024x512 --activation tanh --max-rows 160
    python tools/bench_packed.py --dtype fp32 --rows 64 --unpadded   # as training packs
    python tools/bench_packed.py --dtype int8 --rows 40 320 1000     # decode.amp = "int8"

For each layer (in x out) and row count: the median time of `F.linear` on PyTorch's plain
weight, which oneDNN repacks at every call, and of `PackedWeight.linear` on a weight packed
once; with ``--max-rows``, a bf16 layer also on at most that many rows per oneDNN call
(``bf16_max_rows``, as a search runs the combine layer and the LSTM step). Then how much
longer than the next the first call at a new row count takes, which builds oneDNN's kernel
for it (the median over 5 row counts above those timed, each padded to a row count of its
own, so that the packed layer meets a new shape too). The default layers are those of the
peer benchmark model's search step: the LSTM step ([x_t, h] 1 280 -> 4 x 512 gates) and the
output layer (512 -> 8 000); its combine layer is 1024x512 with tanh. Time on a quiet
machine. ``--unpadded`` packs as training does (`TimeBatchedLinear`: rows not padded).
``--dtype int8`` times fp32 layers against their int8 copies (``decode.amp = "int8"``: int8
weights, fp32 inputs quantized at each call). ``error`` is the packed result's distance from
fp32's, relative to fp32's norm, at the first row count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_output import json_path
from torch import Tensor

from s2s.kernels.denormals import flush_denormals_in_script
from s2s.kernels.packed_linear import ACTIVATIONS, PackedWeight, int8_supported, packs, padded_rows

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
INT8 = "int8"  # fp32 layers on int8 copies (--dtype int8)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median of ``repeats`` calls after two warm-up calls, in milliseconds."""
    run(), run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def first_call_ms(run: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """How much longer the first call at a new row count takes than the second."""
    start = time.perf_counter()
    run(x)
    first = time.perf_counter() - start
    start = time.perf_counter()
    run(x)
    return (first - (time.perf_counter() - start)) * 1e3


def bench_layer(
    size_in: int,
    size_out: int,
    dtype: torch.dtype,
    rows: list[int],
    repeats: int,
    activation: str = "none",
    max_rows: int | None = None,
    unpadded: bool = False,
    int8: bool = False,
):
    """One result per row count: plain, packed and chunked time (at most ``max_rows`` rows
    per call), and (the same for every row count of the layer) the median extra time of a
    first call over 5 new row counts. ``int8``: the packed copy is int8 (``dtype`` fp32)."""
    weight = torch.randn(size_out, size_in, dtype=dtype) / size_in**0.5
    bias = torch.randn(size_out, dtype=dtype)
    packed = PackedWeight(pad_rows=not unpadded)
    packed.int8 = int8
    chunked = PackedWeight(bf16_max_rows=max_rows)
    chunks = max_rows is not None and dtype == torch.bfloat16

    def plain_linear(x: Tensor) -> Tensor:
        y = F.linear(x, weight, bias)
        return torch.tanh(y) if activation == "tanh" else y

    def packed_linear(x: Tensor) -> Tensor:
        return packed.linear(x, weight, bias, activation)

    def chunked_linear(x: Tensor) -> Tensor:
        return chunked.linear(x, weight, bias, activation)

    x = torch.randn(rows[0], size_in, dtype=dtype)
    with torch.no_grad():
        exact = F.linear(x.float(), weight.float(), bias.float())
        exact = torch.tanh(exact) if activation == "tanh" else exact
        error = float((packed_linear(x).float() - exact).norm() / exact.norm())
    steady = []
    for count in rows:
        x = torch.randn(count, size_in, dtype=dtype)
        steady.append(
            (
                median_ms(lambda x=x: plain_linear(x), repeats),
                median_ms(lambda x=x: packed_linear(x), repeats),
                median_ms(lambda x=x: chunked_linear(x), repeats) if chunks else None,
            )
        )
    # Above every row count timed, each in a bucket of its own: shapes not built yet
    probes, count = [], max(rows)
    for _ in range(5):
        count = padded_rows(count) + 1
        probes.append(torch.randn(count, size_in, dtype=dtype))
    plain_first = statistics.median(first_call_ms(plain_linear, x) for x in probes)
    packed_first = statistics.median(first_call_ms(packed_linear, x) for x in probes)
    return [
        {
            "layer": f"{size_in}x{size_out}",
            "activation": activation,
            "dtype": INT8 if int8 else str(dtype).removeprefix("torch."),
            "rows": count,
            "plain_ms": round(plain_ms, 3),
            "packed_ms": round(packed_ms, 3),
            "speedup": round(plain_ms / packed_ms, 2),
            "unpadded": unpadded,
            "plain_gflops": round(2 * count * size_in * size_out / plain_ms / 1e6),
            "packed_gflops": round(2 * count * size_in * size_out / packed_ms / 1e6),
            "error": round(error, 4),
            "max_rows": max_rows if chunks else None,
            "chunked_ms": None if chunked_ms is None else round(chunked_ms, 3),
            "plain_first_call_extra_ms": round(plain_first, 2),
            "packed_first_call_extra_ms": round(packed_first, 2),
        }
        for count, (plain_ms, packed_ms, chunked_ms) in zip(rows, steady, strict=True)
    ]


def positive(text: str) -> int:
    """A count of at least 1 (rows, repeats, layer widths)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return value


def parse_layer(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        size_in, size_out = (positive(part) for part in parts)
    except (ValueError, argparse.ArgumentTypeError):
        message = f"a layer is IN x OUT, like 512x8000, not {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return size_in, size_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layers", nargs="+", type=parse_layer, default=[(1280, 2048), (512, 8000)]
    )
    parser.add_argument("--rows", nargs="+", type=positive, default=[40, 160, 320])
    parser.add_argument("--dtype", choices=[*DTYPES, INT8, "both"], default="both")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="none")
    parser.add_argument(
        "--max-rows", type=positive, help="also time at most this many rows per call"
    )
    parser.add_argument(
        "--unpadded", action="store_true", help="pack as training does: rows not padded"
    )
    parser.add_argument("--repeats", type=positive, default=50)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--json", type=json_path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(DTYPES) if args.dtype == "both" else [args.dtype]
    results = []
    with torch.inference_mode():
        for name in names:
            int8 = name == INT8
            dtype = torch.float32 if int8 else DTYPES[name]
            if not (int8_supported() if int8 else packs(dtype)):
                print(f"skipped {name}: this build or CPU does not pack it")
                continue
            for size_in, size_out in args.layers:
                results += bench_layer(
                    size_in,
                    size_out,
                    dtype,
                    args.rows,
                    args.repeats,
                    args.activation,
                    args.max_rows,
                    args.unpadded,
                    int8,
                )
    chunked = f"{'<=' + str(args.max_rows) + ' rows ms':>14}" if args.max_rows else ""
    header = f"{'layer':>10} {'dtype':>8} {'rows':>5} {'plain ms':>9} {'packed ms':>10} {'x':>5}"
    header += f" {'GFLOP/s plain / packed':>22}"
    print(header + chunked + f" {'1st call +ms plain / packed':>28} {'error':>7}")
    for r in results:
        chunked = "" if not args.max_rows else f"{r['chunked_ms'] or '-':>14}"
        print(
            f"{r['layer']:>10} {r['dtype']:>8} {r['rows']:>5} {r['plain_ms']:>9.3f} "
            f"{r['packed_ms']:>10.3f} {r['speedup']:>5.2f}"
            f" {r['plain_gflops']:>13} / {r['packed_gflops']:<6}{chunked} "
            f"{r['plain_first_call_extra_ms']:>16.2f} / {r['packed_first_call_extra_ms']:<6.2f}"
            f" {r['error']:>7.4f}"
        )
    if args.json:
        conditions = {"threads": torch.get_num_threads(), "torch": torch.__version__}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"conditions": conditions, "results": results}, out, indent=1)


if __name__ == "__main__":
    flush_denormals_in_script("bench_packed")  # as s2s does, before torch starts its threads
    main()
