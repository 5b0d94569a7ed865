"""Decoding speed and quality of a trained run: greedy and beam search on a test file.

    python tools/bench_decode.py runs/mt --src test.en --ref test.de --beams 1 5
    python tools/bench_decode.py runs/mt --src test.en --ref test.de --batch-sentences 64

Prints sentences/second (median of --repeats runs, after one warm-up) and sacreBLEU for each
beam size. By default sentences are batched as `s2s translate` batches them (the run's
decode.batch_tokens source tokens per batch); --batch-sentences N instead decodes batches of
N sentences (sorted by length), as OpenNMT-py and Joey NMT do with batch_type sents.
--amp bf16 decodes in bf16 whatever the run's decode.amp says; --set decode.KEY=VALUE changes
another decoding setting (e.g. --set decode.stopping=early), as `s2s translate --set` does.
--layer-flops adds one more pass that counts the arithmetic of every packed layer
(s2s.kernels.packed_linear: CPU decoding) and the time spent in it, to tell how near the CPU's peak
the layers run and what share of a pass they take.
Time it on a quiet machine: another job on a core slows 2-thread kernels a lot.
`decode_speed` is the same measurement as a function (tools/bench.py calls it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from bench_output import json_path
from torch import Tensor

from s2s.config import DECODE_AMP_CHOICES, SplitConfig
from s2s.core.search import search_batches
from s2s.data.batching import collate
from s2s.data.corpus import load_parallel
from s2s.errors import S2SError
from s2s.kernels import packed_linear
from s2s.kernels.denormals import flush_denormals_in_script
from s2s.tasks.loading import load_run
from s2s.tasks.translation.translator import Translator


def sentence_batches(src_ids: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Indices of the sources in batches of ``size`` sentences, sorted by length so each
    batch pads little (the order is restored after decoding)."""
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    return [order[start : start + size] for start in range(0, len(order), size)]


def translate_in_sentence_batches(
    translator: Translator, lines: Sequence[str], beam: int, size: int
) -> list[str]:
    """Best translation of each line, decoding ``size`` sentences per batch (at the
    translator's decode.amp precision, as its own batching does)."""
    ids = translator.encode(lines)
    translator.model.eval()
    best: list[list[int]] = [[] for _ in lines]
    wanted = [i for i, seq in enumerate(ids) if seq]  # a blank line gives an empty output
    batches = [
        [wanted[i] for i in rows] for rows in sentence_batches([ids[i] for i in wanted], size)
    ]
    searched = search_batches(
        translator.model,
        batches,
        lambda rows: collate(rows, ids),
        translator.decode,
        translator.device,
        beam,
        autocast=translator.autocast,
    )
    for batch, found in searched:
        for row, hyps in zip(batch.indices, found, strict=True):
            best[row] = hyps[0].tokens if hyps else []
    decode = translator.tokenizers.tgt.decode
    return [decode(tokens) for tokens in best]


def translate_lines(
    translator: Translator, lines: Sequence[str], beam: int, batch_sentences: int = 0
) -> list[str]:
    """Best translation of each line: s2s's own batching (decode.batch_tokens), or
    ``batch_sentences`` sentences per batch when that is set."""
    if batch_sentences:
        return translate_in_sentence_batches(translator, lines, beam, batch_sentences)
    return [n_best[0] for n_best in translator.translate(lines, beam)]


def corpus_bleu(hypotheses: list[str], references: list[str], tokenize: str) -> float:
    """sacreBLEU with the given tokenizer: "13a" (the default, on detokenised text) or
    "none" (on text already split into words, as the peer benchmark scores)."""
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize).corpus_score(hypotheses, [references]).score


def decode_speed(
    translator: Translator,
    lines: Sequence[str],
    references: Sequence[str],
    beam: int,
    batch_sentences: int = 0,
    repeats: int = 3,
    tokenize: str = "13a",
) -> dict[str, Any]:
    """Sentences/s (median of ``repeats`` timed runs after a warm-up on 64 sentences) and
    BLEU of translating ``lines``; tokenisation and detokenisation are in the time, as
    they are in `s2s translate`. The first run is also reported on its own: it builds the
    oneDNN primitives of every new shape, which later runs find cached (in bf16 on the
    CPU that made the first of 1 000 sentences 1.3x slower than the next ones), and a
    user translating a file once sees that speed."""
    device = translator.device

    def run(text: Sequence[str]) -> list[str]:
        hyps = translate_lines(translator, text, beam, batch_sentences)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return hyps

    run(lines[:64])  # warm-up
    times, hyps = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        hyps = run(lines)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    batching = (
        f"{batch_sentences} sentences"
        if batch_sentences
        else (f"decode.batch_tokens = {translator.decode.batch_tokens}")
    )
    return {
        "beam": beam,
        "batching": batching,
        "sentences": len(lines),
        "seconds": round(seconds, 3),
        "sentences_per_second": round(len(lines) / seconds, 1),
        "first_run_sentences_per_second": round(len(lines) / times[0], 1),
        "bleu": round(corpus_bleu(hyps, list(references), tokenize), 2),
        "bleu_tokenize": tokenize,
        "stopping": translator.decode.stopping,
        "length_penalty": translator.decode.length_penalty,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }


def packed_layer_flops(
    translator: Translator, lines: Sequence[str], beam: int, batch_sentences: int = 0
) -> dict[str, Any]:
    """One pass over ``lines`` with every packed-layer call counted (oneDNN's fp32 and bf16
    copies, and int8 ones): per layer (in x out), GFLOP (int8: GOP) of the rows asked for
    (the padding to `padded_rows` not counted), seconds and GFLOP/s, and the pass's seconds."""
    totals: dict[str, list[float]] = {}  # layer: [FLOP, seconds]
    originals = {name: getattr(packed_linear, name) for name in ("_padded_linear", "_int8_linear")}

    def counting(original: Any) -> Any:
        def counted(rows: Tensor, packed: Any, *args: Any) -> Tensor:
            start = time.perf_counter()
            y = original(rows, packed, *args)
            seconds = time.perf_counter() - start
            size_in, size_out = rows.size(-1), y.size(-1)
            flops = 2 * y.size(0) * size_in * size_out
            entry = totals.setdefault(f"{size_in}x{size_out}", [0.0, 0.0])
            entry[0] += flops
            entry[1] += seconds
            return y

        return counted

    for name, original in originals.items():
        setattr(packed_linear, name, counting(original))
    try:
        start = time.perf_counter()
        translate_lines(translator, lines, beam, batch_sentences)
        seconds = time.perf_counter() - start
    finally:
        for name, original in originals.items():
            setattr(packed_linear, name, original)
    layers = {
        name: {
            "flop": int(flop),
            "gflop": round(flop / 1e9, 1),
            "seconds": round(spent, 3),
            "gflops": round(flop / 1e9 / spent) if spent else None,
        }
        for name, (flop, spent) in totals.items()
    }
    return {"beam": beam, "pass_seconds": round(seconds, 3), "layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sentences", type=int, default=0, help="0: decode.batch_tokens")
    parser.add_argument("--tokenize", default="13a", help="sacreBLEU tokenizer (none: words)")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument(
        "--amp",
        choices=DECODE_AMP_CHOICES,
        help="decoding precision (default: the run's decode.amp)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="decode.KEY=VALUE",
        help="change a decoding setting of the run, as s2s translate --set (repeatable)",
    )
    parser.add_argument(
        "--layer-flops",
        action="store_true",
        help="one more pass per beam counting the packed layers' GFLOP and GFLOP/s",
    )
    parser.add_argument("--json", type=json_path, help="also write the results here")
    args = parser.parse_args()
    for path in (args.src, args.ref):
        if not path.is_file():
            parser.error(f"{path}: file not found")
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        config, tokenizers, model, device = load_run(
            args.run, device="cpu", amp=args.amp, decode_overrides=args.overrides
        )
    except S2SError as error:  # no run there, a bad --set, or a precision this device lacks
        parser.exit(error.exit_code, f"bench_decode: {error}\n")
    translator = Translator(model, tokenizers, config.decode, device)
    text = load_parallel(SplitConfig(src=args.src, tgt=args.ref), "bench")
    results = []
    for beam in args.beams:
        row = decode_speed(
            translator, text.src, text.tgt, beam, args.batch_sentences, args.repeats, args.tokenize
        )
        if args.layer_flops:
            row["packed_layers"] = packed_layer_flops(
                translator, text.src, beam, args.batch_sentences
            )
        results.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    flush_denormals_in_script("bench_decode")  # as s2s does, before torch starts its threads
    main()
