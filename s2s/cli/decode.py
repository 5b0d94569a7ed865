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

RunsArgument = Annotated[
    list[Path],
    typer.Argument(help="Run directory written by `s2s train`; several: an ensemble."),
]
SampleOption = Annotated[
    bool, typer.Option("--sample", help="Draw outputs instead of searching (--nbest N: N).")
]
TemperatureOption = Annotated[
    float, typer.Option(min=0.0, help="Sampling: softmax temperature; 0 is greedy.")
]
TopKOption = Annotated[int, typer.Option(min=0, help="Sampling: among the K likeliest (0: all).")]
TopPOption = Annotated[
    float, typer.Option(help="Sampling: among the likeliest tokens holding P of the mass.")
]
SeedOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(help="Sampling: the same seed draws the same outputs."),
]
PrefixFileOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(help="One forced target prefix per input line (an empty line: none)."),
]
LmOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(help="A language-model run of the target vocabulary (shallow fusion)."),
]
LmWeightOption = Annotated[float, typer.Option(min=0.0, help="Weight of --lm's log-probs.")]
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

            folders = options.get("run_dirs") or [options["run_dir"]]
            if not any(is_exported(folder) for folder in folders):
                return command(**options)
            if len(folders) > 1:
                raise S2SError("an exported model decodes alone: no ensemble of run directories")
            from s2s.exported import command as exported

            return getattr(exported, runner)(folders[0], options)

        return wrapper

    return decorate


@app.command()
@user_errors
@exported_first("translate_exported")
@computes
def translate(
    run_dirs: RunsArgument,
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
    sample: SampleOption = False,
    temperature: TemperatureOption = 1.0,
    top_k: TopKOption = 0,
    top_p: TopPOption = 1.0,
    seed: SeedOption = None,
    prefix_file: PrefixFileOption = None,
    lm: LmOption = None,
    lm_weight: LmWeightOption = 0.3,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Translate stdin (or --input): one output line per input line, in order.

    Output is written and flushed batch by batch as input arrives. Several run
    directories decode as an ensemble; --lm adds a language model (shallow fusion). A
    directory written by `s2s export` runs on onnxruntime, without torch."""
    use_threads(threads)
    setup_logging(quiet, verbose)
    from s2s.api import load
    from s2s.api.model import steering

    overrides = [*(decode_overrides or []), *run_batch_tokens(batch_tokens)]
    model = load(
        run_dirs, device=device, checkpoint=checkpoint, amp=checked_amp(amp), decode=overrides,
        lm=lm, lm_weight=lm_weight,
    )  # fmt: skip
    # a bad --nbest or sampling option is an error before any input is read
    _, size = model.search_sizes(beam, nbest, sample)
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    steer = steering(sample, size, options, read_prefixes(prefix_file))
    if input is not None and not input.is_file():
        raise S2SError(f"{input}: input file not found")
    stream_translations(model, input, beam, nbest, chunk_lines, max_input_tokens, alignments, steer)


def read_prefixes(path: Path | None) -> list[str] | None:
    """The lines of --prefix-file (one target prefix per input line), or None."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise S2SError(f"{path}: prefix file not found") from None
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise S2SError(f"{path}: invalid UTF-8 at line {line}") from None
    except OSError as error:
        raise S2SError(f"{path}: cannot read: {error.strerror}") from None


def stream_translations(
    model, input: Path | None, beam, nbest, chunk_lines, max_input_tokens, alignments, steer
) -> None:
    """`s2s translate`'s reading, progress display and writing, with `model`."""
    from s2s.progress import TaskProgress, count_lines, progress_enabled
    from s2s.tasks.translation.streaming import silence_stdout

    stream = input.open("rb") if input else sys.stdin.buffer
    show = progress_enabled() and (input is not None or not sys.stdin.isatty())
    progress = TaskProgress("translating", count_lines(input), "lines", enabled=show)
    sys.stdout.flush()
    try:
        with progress:
            count = model.translate_stream(
                stream,
                sys.stdout.buffer,
                beam=beam,
                nbest=nbest,
                chunk_lines=chunk_lines,
                max_input_tokens=max_input_tokens,
                progress=progress,
                alignments=alignments,
                steering=steer,
            )
    except BrokenPipeError:  # the reader went away: stop quietly
        silence_stdout()
        return
    if steer is not None and steer.prefixes is not None and len(steer.prefixes) != count:
        raise S2SError(f"--prefix-file has {len(steer.prefixes)} lines but the input {count}")


def run_batch_tokens(batch_tokens: int | None) -> list[str]:
    """``--batch-tokens N`` as the decode override it is."""
    return [f"decode.batch_tokens={batch_tokens}"] if batch_tokens else []


@app.command()
@user_errors
@computes
def evaluate(
    run_dirs: RunsArgument,
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
    lm: LmOption = None,
    lm_weight: LmWeightOption = 0.3,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Translate a split (or --src) and score it against references: BLEU and chrF
    (sacrebleu), WER, CER and exact match (jiwer) for a translation run, ROUGE-1/2/L for a
    summarization run, or WER, CER and exact-transcript accuracy for a speech run.

    The scores are also recorded in the run directory, for `s2s info`. Several run
    directories of a text run are evaluated as an ensemble (recorded in the first)."""
    use_threads(threads)
    setup_logging(quiet, verbose)
    from s2s.tasks.evaluation import evaluate_run
    from s2s.tasks.task import EvaluationRequest

    amp = checked_amp(amp)
    overrides = decode_overrides or []
    refs = list(ref) if ref else None
    request = EvaluationRequest(split, src, refs, beam, output, checkpoint, device, amp, overrides)
    request.ensemble, request.lm, request.lm_weight = tuple(run_dirs[1:]), lm, lm_weight
    scores = evaluate_run(run_dirs[0], request)
    for score in scores:
        print(score.text)
        print(f"  signature: {score.signature}")


@app.command()
@user_errors
@exported_first("transcribe_exported")
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
    ensemble: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="Another speech run to decode with (repeatable): an ensemble."),
    ] = None,
    lm: LmOption = None,
    lm_weight: LmWeightOption = 0.3,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
) -> None:
    """Transcribe audio files: one line per file, in order.

    Without FILES, reads one path per line from stdin (a blank line gives an empty line).
    A missing or unreadable file stops with an error naming it, after the transcripts of
    the files before it are printed. A directory written by `s2s export` runs on
    onnxruntime, without torch."""
    use_threads(threads)
    setup_logging(quiet)
    from s2s.api import load

    runs = [run_dir, *(ensemble or [])]
    model = load(
        runs, device=device, checkpoint=checkpoint, decode=decode_overrides, lm=lm,
        lm_weight=lm_weight,
    )  # fmt: skip
    paths = [str(path) for path in files] if files else sys.stdin
    model.transcribe_stream(paths, sys.stdout, beam)


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
    beam: Annotated[
        int, typer.Option(min=0, help="Beam-search the likeliest continuation; 0: sample.")
    ] = 0,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Sample a continuation of --prompt from a language model (or beam-search the
    likeliest one with --beam); prints one line.

    Generation stops at the end of a sentence (the model's end of line) or after
    --max-tokens tokens."""
    use_threads(threads)
    setup_logging(quiet=True)
    from s2s.api import load
    from s2s.tasks.language_model.sampling import SamplingOptions

    SamplingOptions(max_tokens, temperature, top_k, top_p, seed, beam).check()  # before loading
    model = load(run_dir, device=device, checkpoint=checkpoint)
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    print(model.generate(prompt, max_tokens=max_tokens, beam=beam, **sampling))


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
    from s2s.api import load
    from s2s.tasks.language_model.data import decode_lines
    from s2s.tasks.language_model.scoring import score_rows

    if input is not None and not input.is_file():
        raise S2SError(f"{input}: input file not found")
    raw = input.read_bytes() if input is not None else sys.stdin.buffer.read()
    lines = decode_lines(iter(raw.splitlines()), str(input) if input is not None else "stdin")
    model = load(run_dir, device=device, checkpoint=checkpoint)
    for row in score_rows(model.score(lines)):
        print(row)
