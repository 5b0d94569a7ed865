"""The Typer app the commands register on, and what they share: turning errors into one
line, the process's CPU modes, logging, and the option types."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.config import DECODE_AMP_CHOICES
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
OWN_PROCESS = False


def computes(command):
    """Commands that run a model: in the s2s command's own process, denormal floats are
    flushed to zero first, before torch starts the threads that inherit the mode
    (s2s.kernels.denormals)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if OWN_PROCESS:
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
