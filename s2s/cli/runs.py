"""Commands that look inside a run or change its checkpoints: info, plot, align, average."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.cli.common import (
    BeamOption,
    CheckpointOption,
    DecodeOverrides,
    Device,
    Quiet,
    ThreadsOption,
    Verbose,
    app,
    computes,
    setup_logging,
    use_threads,
    user_errors,
)


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
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (several: one figure).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("curves.png"),
    forecast: Annotated[
        bool,
        typer.Option(
            "--forecast", help="A forecasting run's test-period forecasts, not its curves."
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Draw learning curves of one or more runs into a PNG.

    Training and validation loss, the validation metric, learning rate and speed against
    the step, from each run's metrics.jsonl; one colour per run. With --forecast (one
    forecasting run): its history, forecasts and intervals over the test period."""
    from s2s.inspect.plots import plot_learning_curves

    path = _plot_forecast(runs, out) if forecast else plot_learning_curves(runs, out)
    if not quiet:
        print(f"s2s: wrote {path}", file=sys.stderr)


def _plot_forecast(runs: list[Path], out: Path) -> Path:
    from s2s.errors import S2SError
    from s2s.inspect.forecasts import forecast_panels
    from s2s.inspect.plots import plot_forecast, require_matplotlib

    if len(runs) != 1:
        raise S2SError("--forecast draws one run's forecasts: give one run directory")
    require_matplotlib()
    return plot_forecast(forecast_panels(runs[0]), out)


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
