"""The `s2s` command line. Commands only parse arguments and call the library; torch and
friends are imported inside the commands so `s2s --help` stays fast."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.errors import S2SError

app = typer.Typer(
    help="Sequence-to-sequence models from recurrent cell plugins: train, translate, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(command):
    """Turn S2SError into one line on stderr and its exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except S2SError as error:
            print(f"s2s: error: {error}", file=sys.stderr)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            print("s2s: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


# Set by `script`: the process is the s2s command's own, so its CPU modes are s2s's to set.
# `main()` called from someone's Python program leaves them to that program.
_OWN_PROCESS = False


def computes(command):
    """Commands that run a model: in the s2s command's own process, denormal floats are
    flushed to zero first, before torch starts the threads that inherit the mode
    (s2s.kernels.denormals)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if _OWN_PROCESS:
            from s2s.kernels.denormals import flush_denormals

            flush_denormals()
        return command(*args, **kwargs)

    return wrapper


def setup_logging(quiet: bool, verbose: bool = False) -> None:
    from s2s.progress import configure_logging

    configure_logging(quiet, verbose)


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only warnings and errors: no progress.")
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="More detail, progress lines more often.")
]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
AMP_CHOICES = ("auto", "bf16", "fp16", "off")  # train.amp
DECODE_AMP_CHOICES = (*AMP_CHOICES, "int8")  # decode.amp: int8 matmuls on the CPU
AmpOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        help="Decoding precision: auto, bf16, fp16, off or int8 (CPU) (default: decode.amp)."
    ),
]


def checked_amp(amp: str | None) -> str | None:
    """``--amp`` after checking it is one of DECODE_AMP_CHOICES (None: keep decode.amp)."""
    if amp is not None and amp not in DECODE_AMP_CHOICES:
        raise S2SError(f"--amp {amp!r}: use one of {', '.join(DECODE_AMP_CHOICES)}")
    return amp


ThreadsOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        min=1,
        help="CPU threads for torch's operations (default: torch's own, one per physical "
        "core, or OMP_NUM_THREADS when that is set).",
    ),
]


def use_threads(threads: int | None) -> None:
    """Set torch's intra-op threads before any work (None: leave torch's default), so a
    user need not reach for OMP_NUM_THREADS."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


CheckpointOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(help="Checkpoint file (default: the best)."),
]
InputOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--input", "-i", help="Read this file instead of stdin."),
]
BeamOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="Beam size (default: the recipe's decode.beam_size)."),
]
Overrides = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer reads the annotation at run time
    typer.Option("--set", help="Override a recipe key: section.key=value (repeatable)."),
]
DecodeOverrides = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--set",
        help="Change a decoding setting of the run: decode.key=value (repeatable), "
        "e.g. decode.length_penalty=0.6 or decode.stopping=early.",
    ),
]


@app.command()
@user_errors
@computes
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    overrides: Overrides = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Run directory (default runs/<task.name>)."),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(help="Discard the run directory's checkpoints and metrics; start over."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail.")] = False,
    devices: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train in N processes with DistributedDataParallel (through torchrun): "
            "one per GPU, or N CPU processes without CUDA.",
        ),
    ] = 1,
) -> None:
    """Train a model from a recipe; a run directory with a checkpoint is resumed."""
    from s2s.kernels.precision import limit_onednn_cache
    from s2s.train.distributed import environment_rank, launch, launched_by_torchrun

    limit_onednn_cache()  # before any computation, and inherited by --devices workers

    if devices > 1 and not launched_by_torchrun():
        sets = [f"--set={item}" for item in overrides or []]
        flags = ["--restart"] * restart + ["--quiet"] * quiet + ["--verbose"] * verbose
        where = ["--out", str(out)] if out is not None else []
        raise typer.Exit(launch(devices, [str(recipe), *where, *sets, *flags]))
    main_rank = environment_rank() == 0
    setup_logging(quiet, verbose)
    if not main_rank:  # one voice: rank 0's (an error still reaches the console)
        logging.getLogger("s2s").setLevel(logging.ERROR)
    from s2s.run.directory import RunDir
    from s2s.tasks.recipe import load_config
    from s2s.tasks.registry import make_trainer
    from s2s.train.distributed import leave
    from s2s.train.signals import Interrupted

    config = load_config(recipe, overrides)
    run = RunDir(out or Path("runs") / config.task.name)
    if restart and main_rank:  # other ranks read the run only after rank 0 has set it up
        from s2s.run.lock import lock_run_directory

        lock_run_directory(run.path)  # never clear a run another process is writing
        run.clear_training_state()
    try:
        record = make_trainer(config, run, quiet=quiet).train()
    except Interrupted as stop:
        sets = [f"--set={item}" for item in overrides or []]
        if launched_by_torchrun():
            sets.append(f"--devices={os.environ['WORLD_SIZE']}")
        again = shlex.join(["s2s", "train", str(recipe), "--out", str(run.path), *sets])
        if main_rank:
            print(f"s2s: {stop.signal_name}: {stop}; resume with: {again}", file=sys.stderr)
        raise typer.Exit(stop.exit_code) from None
    finally:
        leave()
    summary = ", ".join(f"{k} {v}" for k, v in record.items() if k.startswith("valid_"))
    if not quiet and main_rank:
        print(f"s2s: run directory {run.path}: {summary}", file=sys.stderr)


@app.command()
@user_errors
@computes
def translate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    input: InputOption = None,
    beam: BeamOption = None,
    nbest: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            min=1, help="Write N hypotheses per line as 'i ||| text' (default: decode.nbest)."
        ),
    ] = None,
    batch_tokens: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Source tokens per batch (default: decode.batch_tokens)."),
    ] = None,
    checkpoint: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Checkpoint file (default: the best)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    amp: AmpOption = None,
    chunk_lines: Annotated[
        int, typer.Option(min=1, help="Most lines read, sorted and decoded together.")
    ] = 2000,
    max_input_tokens: Annotated[
        int,
        typer.Option(min=1, help="Truncate longer input lines (with a warning)."),
    ] = 1024,
    alignments: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also write each line's attention here, as JSON lines."),
    ] = None,
    decode_overrides: DecodeOverrides = None,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Translate stdin (or --input): one output line per input line, in order.

    Output is written and flushed batch by batch as input arrives."""
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
    ref: Annotated[Optional[Path], typer.Option(help="Reference file.")] = None,  # noqa: UP045
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
    (sacrebleu), or ROUGE-1/2/L for a summarization run, or WER, CER and exact-transcript
    accuracy (jiwer) for a speech run.

    The scores are also recorded in the run directory, for `s2s info`."""
    use_threads(threads)
    setup_logging(quiet, verbose)
    from s2s.tasks.evaluation import evaluate_run
    from s2s.tasks.task import EvaluationRequest

    amp = checked_amp(amp)
    overrides = decode_overrides or []
    request = EvaluationRequest(split, src, ref, beam, output, checkpoint, device, amp, overrides)
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
def cells() -> None:
    """List the installed cells, who registered them, and their options.

    Shows name, class, distribution and version, whether a fused path exists, and the
    options with defaults. A cell that fails to load is listed with its error."""
    from s2s.core.cell_registry import cells_table, describe_cells

    rows = describe_cells()
    for line in cells_table(rows):
        print(line)
    for row in rows:
        if row.error:
            print(f"s2s: warning: {row.error}", file=sys.stderr)


@app.command()
@user_errors
def tasks() -> None:
    """List the installed tasks, who registered them, and the metrics they validate by.

    A task that fails to load is listed with its error."""
    from s2s.tasks.registry import task_table

    for line in task_table():
        print(line)


@app.command()
@user_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (several: one figure).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("curves.png"),
    quiet: Quiet = False,
) -> None:
    """Draw learning curves of one or more runs into a PNG.

    Training and validation loss, the validation metric, learning rate and speed against
    the step, from each run's metrics.jsonl; one colour per run."""
    from s2s.inspect.plots import plot_learning_curves

    path = plot_learning_curves(runs, out)
    if not quiet:
        print(f"s2s: wrote {path}", file=sys.stderr)


@app.command()
@user_errors
@computes
def align(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    sentence: Annotated[str, typer.Argument(help="Source sentence to translate.")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("align.png"),
    beam: BeamOption = None,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    decode_overrides: DecodeOverrides = None,
    quiet: Quiet = False,
) -> None:
    """Translate one sentence and draw its attention as a heat map.

    The translation goes to stdout; the picture has target subwords down and source subwords
    across."""
    setup_logging(quiet=True)
    from s2s.inspect.plots import plot_alignment, require_matplotlib
    from s2s.tasks.loading import load_run
    from s2s.tasks.translation.alignment import align_sentence
    from s2s.tasks.translation.translator import Translator

    require_matplotlib()
    config, tokenizers, model, torch_device = load_run(
        run_dir, checkpoint, device, decode_overrides=decode_overrides or []
    )
    translator = Translator(model, tokenizers, config.decode, torch_device)
    alignment = align_sentence(translator, sentence, beam or config.decode.beam_size)
    print(alignment.translation)
    title = f"{sentence}\n→ {alignment.translation}"
    path = plot_alignment(alignment.source, alignment.target, alignment.weights, out, title)
    if not quiet:
        print(f"s2s: wrote {path}", file=sys.stderr)


@app.command()
@user_errors
def info(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Print the run's model card (--json for machines).

    Task, cell, sizes, parameters, vocabulary, data, training time, best validation and test
    scores, and the s2s and torch versions that trained it."""
    import json

    from s2s.inspect.model_card import format_card, model_card

    card = model_card(run_dir)
    print(json.dumps(card, indent=2, ensure_ascii=False) if as_json else format_card(card))


@app.command()
@user_errors
def average(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    last: Annotated[int, typer.Option(min=1, help="Average the N most recent step-N.pt.")] = 2,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Checkpoint to write (default RUN/checkpoints/averaged-last-N.pt)."),
    ] = None,
    validate: Annotated[
        bool, typer.Option(help="Score the newest input and the average on the valid split.")
    ] = True,
    device: Device = "auto",
    threads: ThreadsOption = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Average the weights of the last N step checkpoints into a new checkpoint.

    Reports the validation scores of the newest of them and of the average; train with
    train.keep_last >= N so that the recent checkpoints are kept."""
    use_threads(threads)
    setup_logging(quiet, verbose)
    from s2s.run.averaging import average_last
    from s2s.tasks.registry import find_task

    report = average_last(run_dir, last, out, validate, device, find_task=find_task)
    names = ", ".join(path.name for path in report.inputs)
    print(f"averaged {names} into {report.output}")
    for label, scores in (("before", report.before), ("after", report.after)):
        if scores is not None:
            which = report.inputs[-1].name if label == "before" else report.output.name
            values = ", ".join(f"{k.removeprefix('valid_')} {v}" for k, v in scores.items())
            print(f"validation {label} ({which}): {values}")
    print(f"use it with: s2s {report.next_command} {run_dir} --checkpoint {report.output}")


@app.command()
@user_errors
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


def main() -> None:
    """Run the command line in this process, as set up by the caller."""
    app()


def script() -> None:
    """The `s2s` script and `python -m s2s` (DDP workers too): first, once, restart under
    tcmalloc where the system has it (s2s.kernels.allocator), then run the command, which may set
    the CPU's floating-point modes (s2s.kernels.denormals)."""
    from s2s.kernels.allocator import restart_under_tcmalloc

    global _OWN_PROCESS
    try:
        restart_under_tcmalloc()
    except S2SError as error:  # a malformed S2S_TCMALLOC, before any command runs
        print(f"s2s: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    _OWN_PROCESS = True
    main()
