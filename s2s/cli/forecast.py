"""`s2s forecast`: the next values of every series of a file, from a forecasting run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.cli.common import (
    CheckpointOption,
    Device,
    ThreadsOption,
    app,
    computes,
    setup_logging,
    use_threads,
    user_errors,
)


@app.command()
@user_errors
@computes
def forecast(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a forecasting recipe.")],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV or Parquet history, the recipe's columns.")
    ],
    horizon: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Steps to forecast (default and most: the run's horizon)."),
    ] = None,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Forecast the steps after the end of every series of --input, as CSV on stdout.

    One row per series and step: the series id, the time, the median and the bounds of the
    run's central interval (forecast.interval, 80 % by default)."""
    use_threads(threads)
    setup_logging(quiet=True)
    from s2s.tasks.forecasting.forecasting import forecast_file, write_csv

    config, forecasts = forecast_file(run_dir, input, horizon, checkpoint, device)
    write_csv(config, forecasts, sys.stdout)
