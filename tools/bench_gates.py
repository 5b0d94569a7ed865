"""The LSTM gate update of a decoding step: tanh as sigmoids against PyTorch's tanh.

    python tools/bench_gates.py                          # 320 rows (64 sentences x beam 5)
    python tools/bench_gates.py --rows 40 320 --hidden-size 512 --threads 2 --json gates.json

A search step on packed weights (the built-in LSTM's `_packed_step`) turns the gates' fp32
pre-activations into the new (h, c). It computes tanh(x) as 2 sigmoid(2x) - 1, with the
weights of the g gate doubled so that one sigmoid covers all four gates; PyTorch's fp32
tanh on the CPU can cost several times its sigmoid. This times, at each row count, `tanh`
and `sigmoid` alone on [rows, H], and the whole update both ways: with two `tanh`
(``tanh``) and as the cell runs it (``sigmoid``, `LSTMCell.decoding_gate_update`). The two ways
alternate within one process (a shared machine's noise hits both alike); medians of
--repeats calls, in microseconds. A CPU where ``tanh`` is the faster way would want the
cell changed back.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from bench_output import json_path
from bench_packed import median_ms
from torch import Tensor

from s2s.core.cell_registry import cell_factory


def update_with_tanh(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The update from (i, f, o, g) pre-activations, tanh computed by PyTorch."""
    hidden = c.size(1)
    sigmoids, g = gates.split([3 * hidden, hidden], dim=1)
    i, f, o = torch.sigmoid(sigmoids).chunk(3, dim=1)
    c = torch.addcmul(f * c, i, torch.tanh(g))
    return o * torch.tanh(c), c


def bench_rows(rows: int, hidden: int, repeats: int, rounds: int) -> dict[str, float]:
    """Medians over ``rounds`` alternated rounds of ``repeats`` calls each."""
    cell = cell_factory("lstm", {})(hidden, hidden)
    gates = torch.randn(rows, 4 * hidden) * 2  # (i, f, o, g), as nn.LSTM's are spread
    doubled = gates.clone()
    doubled[:, 3 * hidden :] *= 2  # (i, f, o, 2g), as the packed weights give them
    c = torch.randn(rows, hidden)
    expected = update_with_tanh(gates, c)
    got = cell.decoding_gate_update(doubled, c)
    error = max(float((a - b).abs().max()) for a, b in zip(got, expected, strict=True))
    ways: dict[str, Callable[[], object]] = {
        "tanh_alone": lambda: torch.tanh(c),
        "sigmoid_alone": lambda: torch.sigmoid(c),
        "update_tanh": lambda: update_with_tanh(gates, c),
        "update_sigmoid": lambda: cell.decoding_gate_update(doubled, c),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            times[name].append(median_ms(way, repeats) * 1e3)
    result = {f"{name}_us": statistics.median(values) for name, values in times.items()}
    return {"rows": rows, "hidden_size": hidden, **result, "max_abs_difference": error}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[320])
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds of each way")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--json", type=json_path, help="also write the results here")
    args = parser.parse_args(argv)
    if min(args.rows) < 1 or args.hidden_size < 1 or args.repeats < 1 or args.rounds < 1:
        parser.error("--rows, --hidden-size, --repeats and --rounds must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"fp32, {torch.get_num_threads()} threads, medians in microseconds")
    print(f"{'rows':>6} {'tanh':>8} {'sigmoid':>8} {'update, tanh':>13} {'update, sigmoid':>16}")
    results = []
    with torch.inference_mode():
        for rows in args.rows:
            r = bench_rows(rows, args.hidden_size, args.repeats, args.rounds)
            results.append(r)
            print(
                f"{rows:>6} {r['tanh_alone_us']:8.1f} {r['sigmoid_alone_us']:8.1f}"
                f" {r['update_tanh_us']:13.1f} {r['update_sigmoid_us']:16.1f}"
            )
    if args.json:
        payload = {"threads": torch.get_num_threads(), "rows": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
