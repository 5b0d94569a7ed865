"""Decoding speed and quality of a trained run: greedy and beam search on a test file.

    python tools/bench_decode.py runs/mt --src test.en --ref test.de --beams 1 5

Prints sentences/second (median of --repeats runs, after one warm-up) and sacreBLEU for each
beam size. Time it on a quiet machine: another job on a core slows 2-thread kernels a lot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from s2s.config import SplitConfig
from s2s.corpus import load_parallel
from s2s.metrics import bleu
from s2s.run_dir import load_run
from s2s.translator import Translator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config, tokenizers, model, device = load_run(args.run, device="cpu")
    translator = Translator(model, tokenizers, config.decode, device)
    text = load_parallel(SplitConfig(src=args.src, tgt=args.ref), "bench")
    results = []
    for beam in args.beams:
        translator.translate(text.src[:64], beam)  # warm-up
        times, hyps = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            hyps = [h[0] for h in translator.translate(text.src, beam)]
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        row = {
            "beam": beam,
            "sentences": len(text.src),
            "seconds": round(seconds, 2),
            "sentences_per_second": round(len(text.src) / seconds, 1),
            "bleu": round(bleu(hyps, text.tgt), 2),
            "threads": torch.get_num_threads(),
        }
        results.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
