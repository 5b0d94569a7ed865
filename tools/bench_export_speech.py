"""Transcribing with an exported speech run on onnxruntime against s2s's own transcription
of the run (fp32), side by side in one sitting.

    python tools/bench_export_speech.py runs/asr-digits --split test --out-dir /tmp/bench \\
        --beams 1 5 --threads 2

Exports the run (fp32) into --out-dir, then transcribes the recipe's --split with both for
every beam size, files read and features computed inside the timing (as `s2s transcribe`
does: torch.stft for the run, numpy for the export): files/s is the median of --repeats
timed runs after a warm-up on 16 files; WER against the manifest's transcripts (jiwer) and
how many transcripts equal s2s's. Prints a Markdown table and one JSON row per measurement.
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
from bench_output import json_path

from s2s.export.onnx_export import export_run
from s2s.exported.recognizer import ExportedRecognizer
from s2s.kernels.denormals import flush_denormals_in_script
from s2s.run.directory import RunDir
from s2s.tasks.speech.audio import utterance_features
from s2s.tasks.speech.data import read_manifest
from s2s.tasks.speech.transcriber import load_speech_run
from s2s.tasks.translation.metrics import speech_scores

Transcribe = Callable[[Sequence[Path], int], list[str]]


def transcribers(run: Path, folder: Path, threads: int) -> tuple[dict[str, Transcribe], Any]:
    """s2s's transcription of the run and the exported model's, and the run's config."""
    config, recognizer = load_speech_run(run, device="cpu")
    start = time.perf_counter()
    export_run(run, folder / "export-fp32")
    print(f"bench_export_speech: exported in {time.perf_counter() - start:.1f} s")
    exported = ExportedRecognizer(folder / "export-fp32", threads or None)

    def s2s(paths: Sequence[Path], beam: int) -> list[str]:
        features = [utterance_features(path, config.audio) for path in paths]
        return recognizer.transcribe(features, beam)

    def onnxruntime(paths: Sequence[Path], beam: int) -> list[str]:
        return exported.transcribe([exported.features(path) for path in paths], beam)

    return {"s2s fp32": s2s, "onnxruntime fp32": onnxruntime}, config


def timed(transcribe: Transcribe, paths: Sequence[Path], beam: int, repeats: int):
    """Median seconds of ``repeats`` runs after a warm-up, and the transcripts."""
    transcribe(paths[:16], beam)
    times, outputs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = transcribe(paths, beam)
        times.append(time.perf_counter() - start)
    return statistics.median(times), outputs


def measure(found: dict[str, Transcribe], paths, references, beams, repeats) -> list[dict]:
    rows = []
    for beam in beams:
        baseline: list[str] | None = None
        for name, transcribe in found.items():
            seconds, outputs = timed(transcribe, paths, beam, repeats)
            baseline = baseline or outputs
            wer = next(s.score for s in speech_scores(outputs, list(references)) if s.name == "WER")
            rows.append(
                {
                    "decoder": name,
                    "beam": beam,
                    "files_per_s": round(len(paths) / seconds, 1),
                    "wer": round(wer, 2),
                    "equal": sum(a == b for a, b in zip(outputs, baseline, strict=True)),
                    "files": len(paths),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the export goes")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: each library's default")
    parser.add_argument("--json", type=json_path, help="also write the results here")
    args = parser.parse_args()
    flush_denormals_in_script("bench_export_speech")  # as s2s does, before torch threads
    if args.threads:
        torch.set_num_threads(args.threads)
    found, config = transcribers(args.run, args.out_dir, args.threads)
    manifest = read_manifest(config.data[args.split], args.split, RunDir(args.run).cache)
    rows = measure(found, manifest.paths, manifest.transcripts, args.beams, args.repeats)
    print("| decoder | beam | files/s | WER | transcripts equal to s2s fp32 |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['decoder']} | {row['beam']} | {row['files_per_s']} | {row['wer']} "
            f"| {row['equal']} / {row['files']} |"
        )
    if args.json:
        args.json.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
