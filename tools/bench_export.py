"""Decoding an exported model on onnxruntime (fp32 and int8 graphs) against s2s's own
decoding of the same run (fp32, bf16 and int8), side by side in one sitting.

    python tools/bench_export.py runs/mt --src test.en --ref test.de --beams 1 5 --threads 2

Exports the run twice (fp32 and --quantize int8) into --out-dir, then translates --src with
each of the five decoders for every beam size: sentences/s (median of --repeats timed runs
after a warm-up on 64 sentences; tokenisation and detokenisation included, as in `s2s
translate`), sacreBLEU against --ref, and how many output lines equal s2s fp32's. Prints
a Markdown table (the one in docs/export.md) and one JSON row per measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench_decode import corpus_bleu
from bench_output import json_path

from s2s.config import SplitConfig
from s2s.data.corpus import load_parallel
from s2s.errors import S2SError
from s2s.export.onnx_export import export_run
from s2s.exported.translator import ExportedTranslator
from s2s.kernels.denormals import flush_denormals_in_script
from s2s.tasks.loading import load_run
from s2s.tasks.translation.translator import Translator

Translate = Callable[[Sequence[str], int], list[list[str]]]
S2S_PRECISIONS = {"s2s fp32": "off", "s2s bf16": "bf16", "s2s int8": "int8"}


def s2s_translators(run: Path) -> dict[str, Translate]:
    """s2s's own decoding of the run in each precision it can run here."""
    found = {}
    for name, amp in S2S_PRECISIONS.items():
        try:
            config, tokenizers, model, device = load_run(run, device="cpu", amp=amp)
        except S2SError as error:  # a precision this CPU lacks
            print(f"bench_export: {name}: {error}")
            continue
        found[name] = Translator(model, tokenizers, config.decode, device).translate
    return found


def exported_translators(run: Path, folder: Path, threads: int) -> dict[str, Translate]:
    """The run exported as fp32 and int8 graphs, each on onnxruntime with ``threads``."""
    found = {}
    for precision in ("fp32", "int8"):
        out = folder / f"export-{precision}"
        start = time.perf_counter()
        export_run(run, out, quantize=None if precision == "fp32" else precision)
        print(f"bench_export: exported {precision} in {time.perf_counter() - start:.1f} s")
        found[f"onnxruntime {precision}"] = ExportedTranslator(out, threads or None).translate
    return found


def timed(translate: Translate, lines: Sequence[str], beam: int, repeats: int):
    """Median seconds of ``repeats`` runs after a warm-up, and the best outputs."""
    translate(lines[:64], beam)
    times, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = [hyps[0] for hyps in translate(lines, beam)]
        times.append(time.perf_counter() - start)
    return statistics.median(times), outputs


def measure(translators: dict[str, Translate], text, beams, repeats) -> list[dict[str, Any]]:
    rows = []
    for beam in beams:
        reference_output: list[str] | None = None
        for name, translate in translators.items():
            seconds, outputs = timed(translate, text.src, beam, repeats)
            reference_output = reference_output or outputs  # s2s fp32 comes first
            same = sum(a == b for a, b in zip(outputs, reference_output, strict=True))
            row = {
                "decoder": name,
                "beam": beam,
                "sentences": len(text.src),
                "sentences_per_second": round(len(text.src) / seconds, 1),
                "bleu": round(corpus_bleu(outputs, list(text.tgt), "13a"), 2),
                "same_as_s2s_fp32": same,
                "threads": torch.get_num_threads(),
                "repeats": repeats,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| decoder | beam | sentences/s | BLEU | lines equal to s2s fp32 |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['decoder']} | {row['beam']} | {row['sentences_per_second']} | "
            f"{row['bleu']} | {row['same_as_s2s_fp32']} / {row['sentences']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True, help="where the exports go")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: each library's default")
    parser.add_argument("--json", type=json_path, help="also write the results here")
    args = parser.parse_args()
    for path in (args.src, args.ref):
        if not path.is_file():
            parser.error(f"{path}: file not found")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        translators = s2s_translators(args.run)
        translators |= exported_translators(args.run, args.out_dir, args.threads)
    except S2SError as error:
        parser.exit(error.exit_code, f"bench_export: {error}\n")
    text = load_parallel(SplitConfig(src=args.src, tgt=args.ref), "bench")
    rows = measure(translators, text, args.beams, args.repeats)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    flush_denormals_in_script("bench_export")  # as s2s does, before torch starts its threads
    main()
