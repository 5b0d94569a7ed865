"""Commands that use a trained run on new input: translate, evaluate, transcribe, generate,
score."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.cli.common import (
    AmpOption,
    BeamOption,
    CheckpointOption,
    DecodeOverrides,
    Device,
    InputOption,
    Quiet,
    ThreadsOption,
    Verbose,
    app,
    checked_amp,
    computes,
    setup_logging,
    use_threads,
    user_errors,
)
from s2s.errors import S2SError

RunArgument = Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")]
NbestOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        min=1, help="Write N hypotheses per line as 'i ||| text' (default: decode.nbest)."
    ),
]
BatchTokensOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="Source tokens per batch (default: decode.batch_tokens)."),
]
ChunkLinesOption = Annotated[
    int, typer.Option(min=1, help="Most lines read, sorted and decoded together.")
]
MaxInputTokensOption = Annotated[
    int, typer.Option(min=1, help="Truncate longer input lines (with a warning).")
]
AlignmentsOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(help="Also write each line's attention here, as JSON lines."),
]


def exported_first(runner: str):
    """The command on a directory written by `s2s export` runs ``runner`` of
    s2s.exported.command instead (onnxruntime), before anything imports torch."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(**options):
            from s2s.exported.files import is_exported

            if not is_exported(options["run_dir"]):
                return command(**options)
            from s2s.exported import command as exported

            return getattr(exported, runner)(options)

        return wrapper

    return decorate


@app.command()
@user_errors
@exported_first("translate_exported")
@computes
def translate(
    run_dir: RunArgument,
    input: InputOption = None,
    beam: BeamOption = None,
    nbest: NbestOption = None,
    batch_tokens: BatchTokensOption = None,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    amp: AmpOption = None,
    chunk_lines: ChunkLinesOption = 2000,
    max_input_tokens: MaxInputTokensOption = 1024,
    alignments: AlignmentsOption = None,
    decode_overrides: DecodeOverrides = None,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Translate stdin (or --input): one output line per input line, in order.

    Output is written and flushed batch by batch as input arrives. RUN_DIR may be a
    directory written by `s2s export`: it is then run on onnxruntime, without torch."""
    use_threads(threads)
    setup_logging(quiet, verbose)
    from s2s.progress import TaskProgress, count_lines, progress_enabled
    from s2s.tasks.loading import load_run
    from s2s.tasks.translation.alignment import alignment_file
    from s2s.tasks.translation.streaming import silence_stdout, translate_stream
    from s2s.tasks.translation.translator import Translator

    config, tokenizers, model, torch_device = load_run(
        run_dir, checkpoint, device, checked_amp(amp), decode_overrides=decode_overrides or []
    )
    if batch_tokens:
        config.decode.batch_tokens = batch_tokens
    translator = Translator(model, tokenizers, config.decode, torch_device)
    beam_size = beam or config.decode.beam_size
    nbest = nbest or config.decode.nbest
    if nbest > beam_size:
        raise S2SError(f"--nbest {nbest} needs a beam of at least {nbest} (--beam)")
    if input is not None and not input.is_file():
        raise S2SError(f"{input}: input file not found")
    stream = input.open("rb") if input else sys.stdin.buffer
    show = progress_enabled() and (input is not None or not sys.stdin.isatty())
    progress = TaskProgress("translating", count_lines(input), "lines", enabled=show)
    sys.stdout.flush()
    try:
        with progress, alignment_file(translator, alignments) as aligner:
            translate_stream(
                translator,
                stream,
                sys.stdout.buffer,
                beam_size,
                nbest,
                chunk_lines,
                max_input_tokens,
                progress=progress,
                alignments=aligner,
            )
    except BrokenPipeError:  # the reader went away: stop quietly
        silence_stdout()


@app.command()
@user_errors
@computes
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    split: Annotated[str, typer.Option(help="Split of the recipe's [data] to score.")] = "test",
    src: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Source file (with --ref), instead of a split."),
    ] = None,
    ref: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="Reference file; repeat it for several references per source."),
    ] = None,
    beam: Annotated[Optional[int], typer.Option(min=1, help="Beam size.")] = None,  # noqa: UP045
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also write the hypotheses here."),
    ] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint file.")] = None,  # noqa: UP045
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    amp: AmpOption = None,
    decode_overrides: DecodeOverrides = None,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Translate a split (or --src) and score it against references: BLEU and chrF
    (sacrebleu), WER, CER and exact match (jiwer) for a translation run, ROUGE-1/2/L for a
    summarization run, or WER, CER and exact-transcript accuracy for a speech run.

    The scores are also recorded in the run directory, for `s2s info`."""
    use_threads(threads)
    setup_logging(quiet, verbose)
    from s2s.tasks.evaluation import evaluate_run
    from s2s.tasks.task import EvaluationRequest

    amp = checked_amp(amp)
    overrides = decode_overrides or []
    refs = list(ref) if ref else None
    request = EvaluationRequest(split, src, refs, beam, output, checkpoint, device, amp, overrides)
    scores = evaluate_run(run_dir, request)
    for score in scores:
        print(score.text)
        print(f"  signature: {score.signature}")


@app.command()
@user_errors
@computes
def transcribe(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a speech recipe.")],
    files: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Argument(help="Audio (.wav, .flac) or feature files; none: paths on stdin."),
    ] = None,
    beam: BeamOption = None,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    decode_overrides: DecodeOverrides = None,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
) -> None:
    """Transcribe audio files: one line per file, in order.

    Without FILES, reads one path per line from stdin (a blank line gives an empty line).
    A missing or unreadable file stops with an error naming it, after the transcripts of
    the files before it are printed."""
    use_threads(threads)
    setup_logging(quiet)
    from s2s.tasks.speech.transcriber import load_speech_run, transcribe_paths

    config, recognizer = load_speech_run(
        run_dir, checkpoint, device, decode_overrides=decode_overrides or []
    )
    paths = [str(path) for path in files] if files else sys.stdin
    transcribe_paths(recognizer, config, paths, beam or config.decode.beam_size, sys.stdout)


@app.command()
@user_errors
@exported_first("generate_exported")
@computes
def generate(
    run_dir: Annotated[Path, typer.Argument(help="Language-model run directory.")],
    prompt: Annotated[str, typer.Option(help="Text to continue (may be empty).")] = "",
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to sample.")] = 50,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="Softmax temperature; 0 is greedy.")
    ] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sample among the K likeliest; 0: off.")] = 0,
    top_p: Annotated[
        float, typer.Option(help="Nucleus: the likeliest tokens holding P of the mass; 1: off.")
    ] = 1.0,
    seed: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Random seed: the same seed gives the same text."),
    ] = None,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Sample a continuation of --prompt from a language model; prints one line.

    Sampling stops at the end of a sentence (the model's end of line) or after
    --max-tokens tokens."""
    use_threads(threads)
    setup_logging(quiet=True)
    from s2s.tasks.language_model.loading import load_language_model
    from s2s.tasks.language_model.sampling import SamplingOptions, generate_text

    options = SamplingOptions(max_tokens, temperature, top_k, top_p, seed)
    options.check()
    config, tokenizer, model, torch_device = load_language_model(run_dir, checkpoint, device)
    word_level = config.tokenizer.model_type == "word"
    text, _ = generate_text(model, tokenizer, prompt, word_level, options, torch_device)
    print(text)


@app.command()
@user_errors
@computes
def score(
    run_dir: Annotated[Path, typer.Argument(help="Language-model run directory.")],
    input: InputOption = None,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Score each line of stdin (or --input) with a language model.

    Prints 'N, log-prob, ppl, tokens, words' tab-separated per line (natural-log
    probability of the line and its end; word-level perplexity), then a 'total' row."""
    use_threads(threads)
    setup_logging(quiet=True)
    from s2s.tasks.language_model.scoring import score_text

    if input is not None and not input.is_file():
        raise S2SError(f"{input}: input file not found")
    raw = input.read_bytes() if input is not None else sys.stdin.buffer.read()
    origin = str(input) if input is not None else "stdin"
    for row in score_text(run_dir, raw, origin, checkpoint, device):
        print(row)
