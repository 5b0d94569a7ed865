"""The `s2s` command line. Commands only parse arguments and call the library; torch and
friends are imported inside the commands so `s2s --help` stays fast."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO, Optional

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


def setup_logging(quiet: bool, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="s2s: %(message)s", stream=sys.stderr, force=True)


Overrides = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer reads the annotation at run time
    typer.Option("--set", help="Override a recipe key: section.key=value (repeatable)."),
]


@app.command()
@user_errors
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
) -> None:
    """Train a model from a recipe; a run directory with a checkpoint is resumed."""
    setup_logging(quiet, verbose)
    from s2s.config import load_config
    from s2s.run_dir import RunDir
    from s2s.training import Trainer

    config = load_config(recipe, overrides)
    run = RunDir(out or Path("runs") / config.task.name)
    if restart:
        run.clear_training_state()
    record = Trainer(config, run, quiet=quiet).train()
    summary = ", ".join(f"{k} {v}" for k, v in record.items() if k.startswith("valid_"))
    print(f"s2s: run directory {run.path}: {summary}", file=sys.stderr)


def _read_lines(stream: BinaryIO) -> Iterator[str]:
    """Lines of a byte stream as text; invalid UTF-8 is replaced and reported by line."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            print(f"s2s: warning: input line {number}: invalid UTF-8 replaced", file=sys.stderr)
        yield line.rstrip("\r\n")


def _chunks(lines, size: int):
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@app.command()
@user_errors
def translate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    input: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--input", "-i", help="Read this file instead of stdin."),
    ] = None,
    beam: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Beam size (default: the recipe's decode.beam_size)."),
    ] = None,
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
    chunk_lines: Annotated[
        int, typer.Option(min=1, help="Lines read, sorted and decoded together.")
    ] = 2000,
) -> None:
    """Translate lines from stdin (or --input): exactly one output line per input line."""
    setup_logging(quiet=True)
    from s2s.run_dir import load_run
    from s2s.translator import Translator

    config, tokenizers, model, torch_device = load_run(run_dir, checkpoint, device)
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
    interactive = input is None and sys.stdin.isatty()
    offset = 0
    try:
        for chunk in _chunks(_read_lines(stream), 1 if interactive else chunk_lines):
            outputs = translator.translate(chunk, beam_size, nbest)
            for index, hyps in enumerate(outputs):
                if nbest == 1:
                    sys.stdout.write(hyps[0] + "\n")
                else:
                    for hyp in hyps:
                        sys.stdout.write(f"{offset + index} ||| {hyp}\n")
            sys.stdout.flush()
            offset += len(chunk)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away: stop quietly
        raise typer.Exit(0) from None


@app.command()
@user_errors
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
) -> None:
    """Translate a split (or --src) and score it against references with sacrebleu."""
    setup_logging(quiet=True)
    from s2s.evaluation import evaluate_run

    for score in evaluate_run(run_dir, split, src, ref, beam, output, checkpoint, device):
        print(score.text)
        print(f"  signature: {score.signature}")


@app.command()
@user_errors
def cells() -> None:
    """List the installed cells: name, class, registering distribution and version."""
    from s2s.cell_registry import discover_cells

    found, conflicts = discover_cells()
    rows = [("name", "class", "distribution", "fused", "options")]
    for entry in found.values():
        try:
            cls = entry.entry_point.load()
            fused = "yes" if getattr(cls, "has_fused_forward", False) else "no"
            options = ", ".join(f"{k}={v!r}" for k, v in getattr(cls, "options", {}).items())
        except Exception as error:  # report a broken plugin, keep listing the others
            fused, options = "?", f"failed to load: {type(error).__name__}: {error}"
        dist = f"{entry.distribution} {entry.version}"
        rows.append((entry.name, entry.target, dist, fused, options or "-"))
    for name, entries in conflicts.items():
        who = " and ".join(e.distribution for e in entries)
        rows.append((name, "-", who, "?", "error: registered by several distributions"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        )


def main() -> None:
    app()
