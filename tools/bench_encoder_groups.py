"""The encoder's cost model, and what encoding in length groups saves (s2s.core.length_groups).

    python tools/bench_encoder_groups.py                    # recipes/mt.toml's model shape
    python tools/bench_encoder_groups.py --threads 1 --batches 8 55 130 --json groups.json

Part 1 times one encoder call at a few shapes and derives the two constants of
`s2s.core.length_groups` in row-steps (one row through one time step of every layer):
``free_rows``, the rows a step costs at least, and ``call_cost``, what a call costs before
its first step. Part 2 encodes the sources of --sources cut into batches of each --batches
size, in file order (as `s2s serve` gathers requests) and sorted by length (as `s2s
translate` batches), each batch whole and in length groups, alternated round by round.

The model is untrained (timing does not depend on the weights), shaped by --embed-size,
--hidden-size and --layers as a bidirectional LSTM encoder with general attention; source
lengths are each line's words plus one, standing in for its subword count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_output import json_path
from bench_packed import median_ms

from s2s.config import ModelConfig
from s2s.core.cell_registry import cell_factory
from s2s.core.length_groups import length_groups
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import Batch, collate
from s2s.data.corpus import open_compressed

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "recipes/data/multi30k/test_2016_flickr.en.gz"
VOCAB = 8000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=SOURCES, help="text, gzip or xz allowed")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 55, 130])
    parser.add_argument("--embed-size", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10, help="calls per shape in part 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=json_path)
    return parser.parse_args(argv)


def source_lengths(path: Path) -> list[int]:
    """Each non-blank line's words plus one (plain, gzip or xz text)."""
    with open_compressed(path) as lines:
        return [len(line.split()) + 1 for line in lines if line.strip()]


def random_batch(rows: int, length: int) -> Batch:
    """``rows`` sources of ``length`` tokens each."""
    return collate(list(range(rows)), [[4 + i % (VOCAB - 4)] * length for i in range(rows)])


def calibrate(model: Seq2Seq, repeats: int) -> dict[str, float]:
    """Call times at a few shapes and the cost model's constants they imply."""

    def call_ms(rows: int, length: int) -> float:
        batch = random_batch(rows, length)
        return median_ms(lambda: model.encode(batch.src, batch.src_lengths), repeats)

    one_step, one_row, half, full = call_ms(1, 1), call_ms(1, 20), call_ms(64, 20), call_ms(128, 20)
    row_step = (full - half) / (64 * 20)
    step_floor = (one_row - one_step) / 19
    return {
        "ms_1x1": one_step,
        "ms_1x20": one_row,
        "ms_64x20": half,
        "ms_128x20": full,
        "row_step_ms": row_step,
        "free_rows": step_floor / row_step,
        "call_cost": (one_step - step_floor) / row_step,
    }


def encode_all(model: Seq2Seq, batches: list, grouped: bool) -> float:
    """Seconds to encode every batch, whole or in length groups."""
    encode = model.encode_by_length if grouped else model.encode
    start = time.perf_counter()
    for batch in batches:
        encode(batch.src, batch.src_lengths)
    return time.perf_counter() - start


def compare(model: Seq2Seq, lengths: list[int], size: int, rounds: int) -> list[dict]:
    """Whole against grouped, for batches in file order and sorted by length."""
    ranked = sorted(range(len(lengths)), key=lengths.__getitem__)
    results = []
    for order_name, order in (("file order", range(len(lengths))), ("sorted", ranked)):
        rows = list(order)
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        batches = [collate(list(range(len(c))), [[5] * lengths[i] for i in c]) for c in chunks]
        groups = [len(length_groups(b.src_lengths.tolist())) for b in batches]
        times: dict[str, list[float]] = {"whole": [], "grouped": []}
        for _ in range(rounds):
            for way in times:
                times[way].append(encode_all(model, batches, way == "grouped"))
        whole, grouped = (statistics.median(times[way]) for way in ("whole", "grouped"))
        results.append(
            {
                "batch": size,
                "order": order_name,
                "groups_per_batch": sum(groups) / len(groups),
                "whole_s": whole,
                "grouped_s": grouped,
            }
        )
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not args.sources.is_file():
        raise SystemExit(f"bench_encoder_groups: --sources {args.sources}: no such file")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig(
        embed_size=args.embed_size,
        hidden_size=args.hidden_size,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        dropout=0.0,
    )
    model = Seq2Seq(config, cell_factory("lstm", {}), VOCAB, VOCAB, 0, share_vocab=True).eval()
    lengths = source_lengths(args.sources)
    with torch.inference_mode():
        model_costs = calibrate(model, args.repeats)
        print(
            f"one call: 1x1 {model_costs['ms_1x1']:.2f} ms, 1x20 {model_costs['ms_1x20']:.2f} ms, "
            f"64x20 {model_costs['ms_64x20']:.2f} ms, 128x20 {model_costs['ms_128x20']:.2f} ms; "
            f"free_rows {model_costs['free_rows']:.1f}, call_cost {model_costs['call_cost']:.0f} "
            "row-steps",
            flush=True,
        )
        compared = []
        for size in args.batches:
            for row in compare(model, lengths, size, args.rounds):
                compared.append(row)
                print(
                    f"batches of {row['batch']:4d}, {row['order']:10s}: "
                    f"whole {row['whole_s']:.3f} s, grouped {row['grouped_s']:.3f} s "
                    f"({row['groups_per_batch']:.1f} groups)",
                    flush=True,
                )
    result = {"threads": args.threads, "sentences": len(lengths), "costs": model_costs}
    result["batches"] = compared
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
