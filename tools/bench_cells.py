"""Speed of every installed cell next to the raw torch.nn kernels, on the current device.

    python tools/bench_cells.py                              # all cells, default shapes
    python tools/bench_cells.py --cells lstm gru --option lstm.proj_size=128 --json out.json
    python tools/bench_cells.py --compile                    # also torch.compile'd `step`

For each cell: a whole sequence forward (no grad, as an encoder at decoding time) and
forward+backward (training) on batch x length x input -> hidden, and one decoding `step`
at --step-batch rows (64 sentences x beam 5), in eval mode without grad as search runs
it. Rows `torch.nn.LSTM/GRU/RNN` time the raw kernels at the same shapes (their step:
nn.LSTMCell/GRUCell/RNNCell); `vs raw` divides a built-in cell's time by its kernel's.
Medians of --repeats runs after --warmup runs. Time on a quiet machine: another job on a
core slows small-thread kernels a lot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tomllib
from collections.abc import Callable
from typing import Any

import torch
from bench_output import json_path
from torch import Tensor, nn

from s2s.cells import RecurrentCell
from s2s.core.cell_registry import check_cell_options, discover_cells, load_entry
from s2s.errors import ConfigError
from s2s.kernels.denormals import flush_denormals_in_script

# Built-in cell -> the raw kernels it is measured against, and the options they share.
RAW_KERNELS: dict[str, tuple[type[nn.RNNBase], type[nn.RNNCellBase], tuple[str, ...]]] = {
    "lstm": (nn.LSTM, nn.LSTMCell, ("proj_size",)),
    "gru": (nn.GRU, nn.GRUCell, ()),
    "rnn": (nn.RNN, nn.RNNCell, ("nonlinearity",)),
}


def parse_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """['lstm.proj_size=128', ...] -> {'lstm': {'proj_size': 128}}; values read as TOML."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        cell, _, name = key.partition(".")
        if not (cell and name and raw):
            raise SystemExit(f"--option {pair!r}: expected CELL.NAME=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        options.setdefault(cell, {})[name] = value
    return options


def check_options(name: str, cls: type[RecurrentCell], options: dict[str, Any], args) -> None:
    """Exit with one line when ``--option`` gives ``name`` an option it does not take, of
    the wrong type, or a value its constructor rejects, rather than a traceback mid-run."""
    try:
        check_cell_options(name, cls, options)
        cls(args.input_size, args.hidden_size, **options)
    except (ConfigError, ValueError, TypeError) as error:
        message = str(error).replace("model.cell_options.", f"{name}.")
        raise SystemExit(f"--option: {message}") from None


def median_ms(run: Callable[[], Any], args: argparse.Namespace, device: torch.device) -> float:
    def synced() -> None:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        synced()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        synced()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_sequence(module: nn.Module, x: Tensor, args, device) -> tuple[float, float]:
    """(forward without grad, forward + backward) in ms for module(x) -> (y, ...)."""

    def forward() -> None:
        with torch.no_grad():
            module(x)

    def forward_backward() -> None:
        module.zero_grad(set_to_none=True)
        module(x)[0].sum().backward()

    return median_ms(forward, args, device), median_ms(forward_backward, args, device)


def time_steps(step: Callable[[Tensor], Any], x_t: Tensor, args, device) -> float:
    """ms per decoding step, averaged over --steps steps (no grad)."""

    def steps() -> None:
        with torch.no_grad():
            for _ in range(args.steps):
                step(x_t)

    return median_ms(steps, args, device) / args.steps


def bench_raw(name: str, options: dict[str, Any], args, device) -> dict[str, Any]:
    sequence_cls, cell_cls, shared = RAW_KERNELS[name]
    kwargs = {k: v for k, v in options.items() if k in shared and v}
    rnn = sequence_cls(args.input_size, args.hidden_size, batch_first=True, **kwargs).to(device)
    x = torch.randn(args.batch, args.length, args.input_size, device=device)
    forward, forward_backward = time_sequence(rnn, x, args, device)
    step_kwargs = {k: v for k, v in kwargs.items() if k != "proj_size"}
    cell = cell_cls(args.input_size, args.hidden_size, **step_kwargs).to(device)
    x_t = torch.randn(args.step_batch, args.input_size, device=device)
    state = torch.zeros(args.step_batch, args.hidden_size, device=device)
    hx = (state, state) if name == "lstm" else state
    step = time_steps(lambda x: cell(x, hx), x_t, args, device)
    label = f"torch.nn.{sequence_cls.__name__}" + (f"({kwargs})" if kwargs else "")
    return {
        "cell": label,
        "forward_ms": forward,
        "forward_backward_ms": forward_backward,
        "step_ms": step,
    }


def stepwise_forward(cell: RecurrentCell, step: Callable) -> Callable[[Tensor], tuple[Tensor]]:
    """The default loop of RecurrentCell.forward, calling ``step`` (e.g. a compiled one)."""

    def forward(x: Tensor) -> tuple[Tensor]:
        state = cell.initial_state(x.size(0), device=x.device, dtype=x.dtype)
        outputs = []
        for x_t in x.unbind(1):
            h, state = step(x_t, state)
            outputs.append(h)
        return (torch.stack(outputs, dim=1),)

    return forward


class _Wrapped(nn.Module):
    """Lets `time_sequence` run a plain function of x over a cell's parameters."""

    def __init__(self, cell: RecurrentCell, forward: Callable) -> None:
        super().__init__()
        self.cell, self._forward = cell, forward

    def forward(self, x: Tensor):
        return self._forward(x)


def bench_cell(cls: type[RecurrentCell], name: str, options, args, device, compiled: bool):
    cell = cls(args.input_size, args.hidden_size, **options).to(device)
    x = torch.randn(args.batch, args.length, args.input_size, device=device)
    x_t = torch.randn(args.step_batch, args.input_size, device=device)
    state = cell.initial_state(args.step_batch, device=device, dtype=x_t.dtype)
    step = torch.compile(cell.step, dynamic=False) if compiled else cell.step
    module = _Wrapped(cell, stepwise_forward(cell, step)) if compiled else cell
    forward, forward_backward = time_sequence(module, x, args, device)
    cell.eval()  # as search runs it: the LSTM steps on packed weights in CPU inference
    step_ms = time_steps(lambda x: step(x, state), x_t, args, device)
    cell.train()
    label = name + (f"({options})" if options else "") + (" compiled step loop" if compiled else "")
    return {
        "cell": label,
        "fused": cls.has_fused_forward and not compiled,
        "forward_ms": forward,
        "forward_backward_ms": forward_backward,
        "step_ms": step_ms,
    }


def compare(row: dict[str, Any], raw: dict[str, Any] | None) -> dict[str, Any]:
    if raw is not None:
        row["forward_vs_raw"] = row["forward_ms"] / raw["forward_ms"]
        row["forward_backward_vs_raw"] = row["forward_backward_ms"] / raw["forward_backward_ms"]
        row["step_vs_raw"] = row["step_ms"] / raw["step_ms"]
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'cell':<44} {'fwd ms':>9} {'fwd+bwd ms':>11} {'step ms':>9}   vs raw (fwd/f+b/step)"
    print(header)
    for r in rows:
        ratio = ""
        if "forward_vs_raw" in r:
            ratio = (
                f"{r['forward_vs_raw']:.2f} / {r['forward_backward_vs_raw']:.2f} / "
                f"{r['step_vs_raw']:.2f}"
            )
        print(
            f"{r['cell'][:44]:<44} {r['forward_ms']:9.2f} {r['forward_backward_ms']:11.2f} "
            f"{r['step_ms']:9.3f}   {ratio}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options below; ``argv`` None reads the command line (tools/bench.py passes its own)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", help="cell names (default: every installed cell)")
    parser.add_argument("--option", action="append", default=[], metavar="CELL.NAME=VALUE")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--step-batch", type=int, default=320, help="rows per decoding step")
    parser.add_argument("--steps", type=int, default=20, help="decoding steps per timing")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(step)")
    parser.add_argument("--json", type=json_path, help="also write the rows here")
    return parser.parse_args(argv)


def run_cells(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(setup, rows): every asked-for cell timed next to its raw kernel, as `main` prints."""
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    options = parse_options(args.option)
    found, _ = discover_cells()
    names = args.cells or list(found)
    rows = []
    for name in names:
        if name not in found:
            raise SystemExit(f"unknown cell {name!r} (installed: {', '.join(found)})")
        cls = load_entry(found[name])
        cell_options = options.get(name, {})
        check_options(name, cls, cell_options, args)
        raw = None
        if name in RAW_KERNELS:
            raw = bench_raw(name, cell_options, args, device)
            rows.append(raw)
        rows.append(compare(bench_cell(cls, name, cell_options, args, device, False), raw))
        if args.compile:
            rows.append(compare(bench_cell(cls, name, cell_options, args, device, True), raw))
    setup = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "length": args.length,
        "input_size": args.input_size,
        "hidden_size": args.hidden_size,
        "step_batch": args.step_batch,
        "repeats": args.repeats,
    }
    if device.type == "cuda":
        setup["gpu"] = torch.cuda.get_device_name(device)
    return setup, rows


def main() -> None:
    args = parse_args()
    setup, rows = run_cells(args)
    print(" ".join(f"{k}={v}" for k, v in setup.items()))
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"setup": setup, "rows": rows}, handle, indent=1)
            handle.write("\n")


if __name__ == "__main__":
    flush_denormals_in_script("bench_cells")  # as s2s does, before torch starts its threads
    main()
