"""`s2s translate DIR`, `s2s generate DIR` and `s2s transcribe DIR` on a directory that
`s2s export` wrote: the same streaming, batching, n-best output and errors as for a run, on
onnxruntime (imports no torch)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s2s.errors import S2SError
from s2s.exported.translator import ExportedTranslator

# `s2s translate` options that only a run directory serves: refused rather than ignored
RUN_ONLY_OPTIONS = (
    "checkpoint",
    "amp",
    "alignments",
    "decode_overrides",
    "sample",
    "prefix_file",
    "lm",
    "ensemble",
)


def refuse_run_options(folder: Path, options: Mapping[str, Any]) -> None:
    """One line naming the options given that an exported model cannot honour."""
    named = [name for name in RUN_ONLY_OPTIONS if options.get(name)]
    if options.get("device") not in ("auto", "cpu"):
        named.append("device")
    if named:
        flags = ", ".join("--" + name.replace("_", "-") for name in named)
        flags = flags.replace("--decode-overrides", "--set")
        raise S2SError(f"{folder}: an exported model does not take {flags}")


def translate_exported(folder: Path, options: Mapping[str, Any]) -> None:
    """Translate stdin (or --input) with the exported model, one output line per input line;
    ``options`` are `s2s translate`'s, by parameter name."""
    from s2s.progress import TaskProgress, configure_logging, count_lines, progress_enabled
    from s2s.tasks.translation.streaming import silence_stdout, translate_stream

    refuse_run_options(folder, options)
    configure_logging(options["quiet"], options["verbose"])
    translator = ExportedTranslator(folder, options["threads"])
    decode = translator.decode
    if options["batch_tokens"]:
        decode.batch_tokens = options["batch_tokens"]
    beam_size = options["beam"] or decode.beam_size
    nbest = options["nbest"] or decode.nbest
    if nbest > beam_size:
        raise S2SError(f"--nbest {nbest} needs a beam of at least {nbest} (--beam)")
    source = options["input"]
    if source is not None and not source.is_file():
        raise S2SError(f"{source}: input file not found")
    stream = source.open("rb") if source else sys.stdin.buffer
    show = progress_enabled() and (source is not None or not sys.stdin.isatty())
    progress = TaskProgress("translating", count_lines(source), "lines", enabled=show)
    sys.stdout.flush()
    try:
        with progress:
            translate_stream(
                translator,  # type: ignore[arg-type]  # the Translator interface, without torch
                stream,
                sys.stdout.buffer,
                beam_size,
                nbest,
                options["chunk_lines"],
                options["max_input_tokens"],
                progress=progress,
            )
    except BrokenPipeError:  # the reader went away: stop quietly
        silence_stdout()


def generate_exported(folder: Path, options: Mapping[str, Any]) -> None:
    """Continue --prompt with an exported language model; prints one line."""
    from s2s.exported.language_model import ExportedLanguageModel
    from s2s.tasks.language_model.text import SamplingOptions

    refuse_run_options(folder, options)
    if options.get("beam"):
        raise S2SError(f"{folder}: an exported language model samples; --beam needs the run")
    sampling = SamplingOptions(
        options["max_tokens"],
        options["temperature"],
        options["top_k"],
        options["top_p"],
        options["seed"],
    )
    sampling.check()
    model = ExportedLanguageModel(folder, options["threads"])
    print(model.generate(options["prompt"], sampling))


def transcribe_exported(folder: Path, options: Mapping[str, Any]) -> None:
    """Transcribe FILES (or paths on stdin) with the exported recogniser, one line per
    file in order, as `s2s transcribe` does on a run."""
    from s2s.exported.recognizer import ExportedRecognizer
    from s2s.progress import configure_logging
    from s2s.tasks.speech.streaming import stream_transcripts

    refuse_run_options(folder, options)
    configure_logging(options["quiet"], False)
    recognizer = ExportedRecognizer(folder, options["threads"])
    beam_size = options["beam"] or recognizer.decode.beam_size
    files = options["files"]
    paths = [str(path) for path in files] if files else sys.stdin
    stream_transcripts(
        recognizer.features,
        lambda features: recognizer.transcribe(features, beam_size),
        paths,
        sys.stdout,
    )
