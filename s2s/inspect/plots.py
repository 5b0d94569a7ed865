"""Pictures of what a model does: learning curves from metrics logs and attention heat maps.

matplotlib is optional (the ``viz`` extra). Figures are drawn on ``matplotlib.figure.Figure``
directly, never through pyplot, so no GUI backend or global state is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2s.errors import S2SError
from s2s.run.metrics_log import read_metrics, task_metric
from s2s.scores import lower_is_better

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'matplotlib>=3.7' (or pip install 's2s[viz]')"


def require_matplotlib() -> None:
    """Fail with one line (and the pip command) before any slow work when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        message = f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}"
        raise S2SError(message) from None


def new_figure(**kwargs: Any) -> Figure:
    """A figure with constrained layout."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def save_figure(figure: Figure, out: Path, dpi: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(out, dpi=dpi)
    except (OSError, ValueError) as error:
        raise S2SError(f"{out}: cannot write the picture: {error}") from None
    return out


def run_labels(runs: Sequence[Path]) -> list[str]:
    """Legend labels: the run directory's name, or its whole path when names repeat."""
    names = [run.resolve().name or str(run) for run in runs]
    return [
        str(run) if names.count(name) > 1 else name for run, name in zip(runs, names, strict=True)
    ]


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def _metric_name(key: str) -> str:
    name = key.removeprefix("valid_")
    return name.upper() if name in ("bleu", "wer", "cer") else name


def plot_learning_curves(runs: Sequence[Path], out: Path) -> Path:
    """Training/validation loss, the task metric, learning rate and speed against steps, one
    colour per run, into a PNG."""
    require_matplotlib()
    for run in runs:
        if not run.is_dir():
            raise S2SError(f"{run}: run directory not found")
    logs = [read_metrics(run / "metrics.jsonl") for run in runs]
    empty = [str(run) for run, records in zip(runs, logs, strict=True) if not records]
    if empty:
        raise S2SError(f"{empty[0]}: the metrics log holds no validation yet")
    metric = next((key for key in map(task_metric, logs) if key), "valid_ppl")
    figure = new_figure(figsize=(12, 8))
    (loss, score), (rate, speed) = figure.subplots(2, 2, sharex=True)
    for index, (label, records) in enumerate(zip(run_labels(runs), logs, strict=True)):
        colour = f"C{index % 10}"
        style = {"color": colour, "marker": "o", "markersize": 3}
        loss.plot(*_series(records, "train_loss"), **style, label=f"{label} train")
        loss.plot(*_series(records, "valid_loss"), **style, linestyle="--", label=f"{label} valid")
        steps, values = _series(records, metric)
        score.plot(steps, values, **style, label=label)
        if values:
            best = min(values) if lower_is_better(metric) else max(values)
            where = steps[values.index(best)]
            score.plot([where], [best], color=colour, marker="*", markersize=14, linestyle="")
            score.annotate(f"{best:g}", (where, best), textcoords="offset points", xytext=(6, 6))
        rate.plot(*_series(records, "lr"), **style, label=label)
        speed.plot(*_series(records, "tokens_per_second"), **style, label=label)
    score.margins(y=0.12)  # room for the best value's label
    _label(loss, "loss per target token", "training (label-smoothed) and validation loss")
    _label(score, _metric_name(metric), f"validation {_metric_name(metric)} (star: best)")
    _label(rate, "learning rate", "learning rate at each validation")
    _label(speed, "target tokens / s", "training speed")
    rate.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for axes in (rate, speed):
        axes.set_xlabel("optimiser step")
    figure.suptitle("learning curves: " + ", ".join(run_labels(runs)))
    return save_figure(figure, out, dpi=110)


def _label(axes: Axes, ylabel: str, title: str) -> None:
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def plot_alignment(
    source: Sequence[str],
    target: Sequence[str],
    weights: Sequence[Sequence[float]],
    out: Path,
    title: str = "",
) -> Path:
    """Attention heat map: one row per target subword, one column per source subword."""
    if not target or not source:
        raise S2SError("nothing to draw: the source or the translation is empty")
    width = min(4.0 + 0.38 * len(source), 40.0)
    height = min(2.5 + 0.38 * len(target), 40.0)
    figure = new_figure(figsize=(width, height))
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    axes.set_xticks(range(len(source)), list(source), rotation=90)
    axes.set_yticks(range(len(target)), list(target))
    axes.xaxis.tick_top()
    axes.set_xlabel("source subwords")
    axes.xaxis.set_label_position("top")
    axes.set_ylabel("target subwords")
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if title:
        figure.suptitle(title, fontsize="medium")
    return save_figure(figure, out, dpi=110)


@dataclass
class ForecastPanel:
    """One series to draw: its recent history, and forecasts (median and interval) over
    the steps that follow, with the actual values where known."""

    title: str
    history_times: Sequence[Any]
    history: Sequence[float]
    times: Sequence[Any]
    median: Sequence[float]
    lower: Sequence[float]
    upper: Sequence[float]
    actual: Sequence[float]
    interval: str = "80% interval"


def plot_forecast(panels: Sequence[ForecastPanel], out: Path) -> Path:
    """History, forecast median and shaded interval, one panel per series."""
    if not panels:
        raise S2SError("nothing to draw: no series to forecast")
    figure = new_figure(figsize=(12, 3.2 * len(panels)))
    axes_list = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for axes, panel in zip(axes_list, panels, strict=True):
        axes.plot(panel.history_times, panel.history, color="0.35", linewidth=1, label="history")
        axes.plot(panel.times, panel.actual, color="black", linewidth=1, label="actual")
        axes.fill_between(
            panel.times, panel.lower, panel.upper, color="C0", alpha=0.25, label=panel.interval
        )
        axes.plot(panel.times, panel.median, color="C0", linewidth=1.5, label="forecast (median)")
        axes.set_title(panel.title, fontsize="medium")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="upper left")
    return save_figure(figure, out, dpi=110)
