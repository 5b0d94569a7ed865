"""`s2s train`: a recipe into a run directory, resumed if it has a checkpoint; DDP workers."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.cli.common import (
    Overrides,
    app,
    computes,
    setup_logging,
    user_errors,
)

RestartOption = Annotated[
    bool, typer.Option(help="Discard the run directory's checkpoints and metrics; start over.")
]
DevicesOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Train in N processes with DistributedDataParallel (through torchrun): "
        "one per GPU, or N CPU processes without CUDA.",
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
    restart: RestartOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail.")] = False,
    devices: DevicesOption = 1,
    budget: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Train for this long (60m, 1h30m, 90): sets train.budget_minutes, whose "
            "schedule, validation spacing and final averaging fit the time (docs/budget.md).",
        ),
    ] = None,
) -> None:
    """Train a model from a recipe; a run directory with a checkpoint is resumed."""
    from s2s.kernels.precision import limit_onednn_cache
    from s2s.train.distributed import environment_rank, launch, launched_by_torchrun

    limit_onednn_cache()  # before any computation, and inherited by --devices workers
    overrides = with_budget(overrides, budget)

    if devices > 1 and not launched_by_torchrun():
        flags = ["--restart"] * restart + ["--quiet"] * quiet + ["--verbose"] * verbose
        where = ["--out", str(out)] if out is not None else []
        raise typer.Exit(launch(devices, [str(recipe), *where, *set_flags(overrides), *flags]))
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
        if main_rank:
            again = resume_command(recipe, run.path, overrides)
            print(f"s2s: {stop.signal_name}: {stop}; resume with: {again}", file=sys.stderr)
        raise typer.Exit(stop.exit_code) from None
    finally:
        leave()
    summary = ", ".join(f"{k} {v}" for k, v in record.items() if k.startswith("valid_"))
    if not quiet and main_rank:
        print(f"s2s: run directory {run.path}: {summary}", file=sys.stderr)


def with_budget(overrides: list[str] | None, budget: str | None) -> list[str] | None:
    """``--budget`` as the ``--set train.budget_minutes=...`` it stands for, so resume
    commands and --devices workers repeat it like any other override."""
    if budget is None:
        return overrides
    from s2s.train.budget import parse_duration

    return [*(overrides or []), f"train.budget_minutes={parse_duration(budget)}"]


def set_flags(overrides: list[str] | None) -> list[str]:
    """The --set options as one argument each, to hand on to another s2s process."""
    return [f"--set={item}" for item in overrides or []]


def resume_command(recipe: Path, run_path: Path, overrides: list[str] | None) -> str:
    """The command that resumes an interrupted run (under torchrun: as many processes)."""
    from s2s.train.distributed import launched_by_torchrun

    sets = set_flags(overrides)
    if launched_by_torchrun():
        sets.append(f"--devices={os.environ['WORLD_SIZE']}")
    return shlex.join(["s2s", "train", str(recipe), "--out", str(run_path), *sets])
