"""Forecasting: reading series (one-line errors for bad files), per-window scaling, windows
that never read the future, a model that learns a seasonal series far better than the
naive forecast, every installed cell through a short fit, exact resume, and the user's
path through `s2s train / evaluate / forecast / plot / info` on a tiny synthetic series."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ForecastConfig
from s2s.core.cell_registry import discover_cells
from s2s.errors import ConfigError, S2SError
from s2s.run.checkpoint import load_checkpoint
from s2s.run.directory import RunDir
from s2s.tasks.forecasting import baselines
from s2s.tasks.forecasting.metrics import crps_from_samples
from s2s.tasks.forecasting.model import build_forecaster
from s2s.tasks.forecasting.scaling import fit_scale
from s2s.tasks.forecasting.series import read_series
from s2s.tasks.forecasting.trainer import ForecastingTrainer
from s2s.tasks.forecasting.windows import collate_windows, origins, seasonal_naive
from s2s.tasks.recipe import load_config

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "forecast-sine.toml"
PERIOD = 12


def seasonal_values(steps: int, seed: int = 0, level: float = 20.0) -> np.ndarray:
    """A daily-shaped series: a season of PERIOD steps, a slow wave and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    shape = 6 * np.sin(2 * np.pi * t / PERIOD) + 3 * np.cos(4 * np.pi * t / PERIOD)
    return level + shape + 2 * np.sin(2 * np.pi * t / 150) + rng.normal(0, 0.3, steps)


def write_series(path: Path, series: dict[str, np.ndarray], freq: str = "h") -> Path:
    """A CSV with an id column when there are several series."""
    frames = []
    for name, values in series.items():  # always an id column: the runs here name it
        times = pd.date_range("2024-01-01", periods=len(values), freq=freq)
        frame = pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "value": values})
        frame.insert(0, "id", name)
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return path


def overrides(data: Path, steps: int = 6, *extra: str) -> list[str]:
    """The sine recipe on ``data``, small and quick."""
    return [
        *(f'data.{split}.path="{data}"' for split in ("train", "valid", "test")),
        'forecast.id_column="id"',
        f"forecast.season_length={PERIOD}",
        "forecast.context_length=24",
        "forecast.horizon=6",
        "forecast.valid_steps=24",
        "forecast.test_steps=24",
        "forecast.batch_size=16",
        "model.hidden_size=16",
        f"train.max_steps={steps}",
        "train.valid_every=3",
        "train.threads=1",
        "train.tensorboard=false",
        *extra,
    ]


def train(folder: Path, data: Path, *extra: str, steps: int = 6) -> Path:
    out = folder / "run"
    config = load_config(RECIPE, overrides(data, steps, *extra))
    ForecastingTrainer(config, RunDir(out), quiet=True).train()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series")
    return write_series(folder / "series.csv", {"a": seasonal_values(400)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A Student-t model trained long enough to learn the season (1,000 steps of data)."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_series(folder / "long.csv", {"a": seasonal_values(1000)})
    extra = ['forecast.loss="student_t"', 'forecast.scaling="mean"', 'model.cell="lstm"']
    extra += ["forecast.time_features=true", "train.lr=0.01", "train.valid_every=100"]
    return train(folder, data, *extra, steps=300)


# -- reading series -----------------------------------------------------------------------


def forecast_config(**keys) -> ForecastConfig:
    return ForecastConfig(**{"target_column": "value", **keys})


def test_series_are_read_in_order_with_their_time_features(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s.csv", {"x": np.arange(30.0), "y": np.arange(30.0) * 2})
    series = read_series(path, forecast_config(id_column="id"))
    one = write_series(tmp_path / "one.csv", {"x": np.arange(30.0)})
    assert [s.id for s in read_series(one, forecast_config())] == ["value"]  # no id column
    assert [s.id for s in series] == ["x", "y"]
    assert np.array_equal(series[1].values, np.arange(30, dtype=np.float32) * 2)
    assert series[0].step == np.timedelta64(1, "h")
    assert series[0].features.shape == (30, 4)
    # 2024-01-01 00:00 was a Monday at midnight: both angles at zero
    assert np.allclose(series[0].features[0], [0, 1, 0, 1], atol=1e-6)
    # six hours later: a quarter of the day
    assert np.allclose(series[0].features[6, :2], [1, 0], atol=1e-6)


def test_parquet_and_compressed_csv_read_as_csv_does(tmp_path: Path) -> None:
    path = write_series(tmp_path / "s.csv", {"x": np.arange(20.0), "y": np.arange(20.0) + 5})
    table = pd.read_csv(path)
    table.to_parquet(tmp_path / "s.parquet")
    table.to_csv(tmp_path / "s.csv.gz", index=False)
    config = forecast_config(id_column="id")
    expected = read_series(path, config)
    for other in ("s.parquet", "s.csv.gz"):
        found = read_series(tmp_path / other, config)
        assert [s.id for s in found] == [s.id for s in expected]
        for a, b in zip(found, expected, strict=True):
            assert np.array_equal(a.values, b.values) and np.array_equal(a.times, b.times)
    with pytest.raises(S2SError, match=r"s\.txt: a series file is \.csv"):
        read_series(bad_file(tmp_path, "x", "s.txt"), config)


def bad_file(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "time,value\n2024-01-01 00:00,1\n2024-01-01 01:00,x\n",
            "line 3, column 'value': not a number: 'x'",
        ),
        (
            "time,value\n2024-01-01 00:00,1\n2024-01-01 01:00,\n",
            "line 3, column 'value': empty value",
        ),
        (
            "time,value\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 02:00,3\n"
            "2024-01-01 04:00,4\n",
            "line 5, column 'time': gap in series 'value': 2024-01-01 02:00:00 is followed by "
            "2024-01-01 04:00:00 (the series steps every 0 days 01:00:00)",
        ),
        ("time,level\n2024-01-01 00:00,1\n", "no column 'value' (columns: time, level)"),
        ("time,value\nmonday,1\n2024-01-01 01:00,2\n", "line 2, column 'time': not a timestamp"),
    ],
)
def test_a_bad_series_file_is_one_line_naming_file_line_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    path = bad_file(tmp_path, text)
    with pytest.raises(S2SError) as caught:
        read_series(path, forecast_config())
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_series_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(S2SError, match=r"missing\.csv: file not found$"):
        read_series(tmp_path / "missing.csv", forecast_config())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no rows"),
        (b"time,value\n", "no rows"),
        (b"time,value\n1,\xff\xfe\n", "not UTF-8 text"),
    ],
)
def test_an_empty_or_binary_series_file_is_one_line(
    tmp_path: Path, content: bytes, message: str, capsys
) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(S2SError) as caught:
        read_series(path, forecast_config())
    assert str(caught.value) == f"{path}: cannot read it as a table: {message}"
    assert capsys.readouterr().err == ""  # the reader's own log lines are kept quiet


def test_the_recipe_refuses_splits_in_different_files(tmp_path: Path, data: Path) -> None:
    other = write_series(tmp_path / "other.csv", {"a": seasonal_values(400)})
    with pytest.raises(ConfigError, match="cuts valid and test by time from one file"):
        load_config(RECIPE, [*overrides(data), f'data.test.path="{other}"'])
    with pytest.raises(ConfigError, match="reads the value 48 steps back"):
        load_config(RECIPE, [*overrides(data), "forecast.lags=[48]"])


# -- scaling, windows, metrics ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mean", "standard", "none"])
def test_scaling_round_trips(kind: str) -> None:
    context = torch.tensor([[10.0, 12.0, 14.0, 16.0], [-1.0, 0.0, 1.0, 0.0], [5.0] * 4])
    values = torch.randn(3, 7) * 20
    scale = fit_scale(context, kind)
    assert torch.allclose(scale.undo(scale.apply(values)), values, atol=1e-4)
    scaled = scale.apply(context)
    if kind == "mean":
        assert torch.allclose(scaled.abs().mean(dim=1), torch.ones(3))
    if kind == "standard":
        assert torch.allclose(scaled[:2].mean(dim=1), torch.zeros(2), atol=1e-6)
        assert torch.allclose(scaled[:2].std(dim=1, unbiased=False), torch.ones(2), atol=1e-5)
        assert torch.isfinite(scaled[2]).all()  # a flat context does not divide by zero
    if kind == "none":
        assert torch.equal(scaled, context)


def test_seasonal_naive_reads_whole_seasons_back_from_the_context() -> None:
    context = np.arange(10.0)  # the last season of 4 is 6, 7, 8, 9
    assert list(seasonal_naive(context, 6, 4)) == [6, 7, 8, 9, 6, 7]
    assert list(seasonal_naive(context, 3, 1)) == [9, 9, 9]


def test_crps_of_samples_matches_its_closed_forms() -> None:
    actual = np.array([0.0])
    point = np.full((50, 1), 2.0)
    assert crps_from_samples(point, actual) == pytest.approx([2.0])  # a point: |error|
    rng = np.random.default_rng(0)
    normal = rng.standard_normal((20000, 1))
    exact = 2 * (1 / math.sqrt(2 * math.pi)) - 1 / math.sqrt(math.pi)  # N(0,1) at y = 0
    assert crps_from_samples(normal, actual) == pytest.approx([exact], rel=0.02)


def test_validation_and_test_origins_roll_through_their_periods(data: Path) -> None:
    config = load_config(RECIPE, overrides(data)).forecast
    series = read_series(data, config)[0]
    assert origins(series, config, "test") == [376, 382, 388, 394]
    assert origins(series, config, "valid") == [352, 358, 364, 370]
    train = origins(series, config, "train")
    assert train[0] == 24 and train[-1] + config.horizon == 352  # ends before validation


@pytest.mark.parametrize("decoder", ["direct", "autoregressive"])
def test_forecasts_never_read_values_after_their_origin(data: Path, decoder: str) -> None:
    config = load_config(RECIPE, overrides(data, 1, f'forecast.decoder="{decoder}"'))
    torch.manual_seed(0)
    model = build_forecaster(config).eval()
    series = read_series(data, config.forecast)[0]
    origin = 300

    def forecast(values: np.ndarray) -> torch.Tensor:
        series.values = values
        with torch.no_grad():
            return model.predict(collate_windows([(series, origin)], config.forecast))[0]

    original = series.values.copy()
    before = forecast(original)
    future = original.copy()
    future[origin:] += 1000.0 * np.random.default_rng(1).standard_normal(len(future) - origin)
    assert torch.equal(forecast(future), before)
    past = original.copy()
    past[origin - 1] += 5.0
    assert not torch.equal(forecast(past), before)  # the test can see a change


# -- training -----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(discover_cells()[0]))
def test_every_installed_cell_fits_a_few_steps(tmp_path: Path, data: Path, cell: str) -> None:
    run = train(tmp_path, data, f'model.cell="{cell}"', 'forecast.loss="gaussian"', steps=3)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and math.isfinite(record["valid_loss"])
    assert math.isfinite(record["valid_mase"])
    assert "valid_ppl" not in record  # exp of a loss over real numbers is no perplexity


def test_a_model_learns_the_season_far_better_than_naive(trained: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(trained), "--split", "test", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = {line.split("  ")[0].strip(): line for line in result.output.splitlines()}
    assert {"model", "naive", "seasonal naive"} <= set(rows)
    mase = {
        name: float(row.split("MASE ")[1].split()[0]) for name, row in rows.items() if "MASE" in row
    }
    assert mase["model"] < 0.3 * mase["naive"]


def test_evaluate_without_statsmodels_says_how_to_install_it(
    trained: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from s2s.tasks.forecasting.evaluation import evaluate_forecaster

    monkeypatch.setattr(baselines, "statsmodels_available", lambda: False)
    scores = evaluate_forecaster(trained, "valid", None, "cpu")
    assert [s.name for s in scores] == ["mase", "mase_naive", "mase_seasonal_naive"]
    assert "pip install 's2s[forecast]'" in caplog.text


def test_evaluate_compares_the_model_with_ets(trained: Path) -> None:
    from s2s.tasks.forecasting.evaluation import evaluate_forecaster

    scores = {s.name: s for s in evaluate_forecaster(trained, "test", None, "cpu")}
    assert set(scores) == {"mase", "mase_naive", "mase_seasonal_naive", "mase_ets"}
    assert "coverage" in scores["mase"].text and "ets" in scores["mase_ets"].text
    assert all(math.isfinite(s.score) for s in scores.values())


def test_covariates_are_read_in_training_and_refused_by_forecast(tmp_path: Path) -> None:
    values = seasonal_values(400)
    path = write_series(tmp_path / "s.csv", {"a": values})
    table = pd.read_csv(path)
    table["temperature"] = np.cos(np.arange(400) / 7.0)
    table.to_csv(path, index=False)
    run = train(tmp_path, path, 'forecast.covariates=["temperature"]', steps=3)
    config = load_config(RECIPE, overrides(path, 3, 'forecast.covariates=["temperature"]'))
    series = read_series(path, config.forecast)[0]
    assert series.features.shape == (400, 1)  # the recipe turns time features off
    assert np.allclose(series.features[:, 0], np.cos(np.arange(400) / 7.0), atol=1e-6)
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(run), "--split", "valid"])
    assert result.exit_code == 0 and "seasonal naive" in result.output
    result = runner.invoke(app, ["forecast", str(run), "--input", str(path)])
    assert result.exit_code == 1
    assert "reads covariates (temperature) whose future values" in result.output


def test_average_validates_a_forecaster_as_training_did(tmp_path: Path, data: Path) -> None:
    """`s2s average` scores forecasting checkpoints exactly as training logged them."""
    from s2s.run.averaging import average_last
    from s2s.run.metrics_log import read_metrics
    from s2s.tasks.registry import find_task

    run = train(tmp_path, data, "train.valid_every=2", "train.keep_last=2", steps=4)
    report = average_last(run, 2, None, True, "cpu", find_task=find_task)
    logged = {r["step"]: r for r in read_metrics(run / "metrics.jsonl")}[4]
    assert report.before == {key: logged[key] for key in report.before}
    assert set(report.before) == {"valid_loss", "valid_mase"}
    assert report.after is not None and math.isfinite(report.after["valid_mase"])
    assert report.after != report.before  # the average is another model


class Crash(Exception):
    """A training process dying after its last save."""


def test_a_crashed_run_resumes_exactly(tmp_path: Path, data: Path) -> None:
    settings = [*overrides(data, 8), "model.dropout=0.3", "train.save_every=2"]
    reference = RunDir(tmp_path / "reference")
    ForecastingTrainer(load_config(RECIPE, settings), reference, quiet=True).train()
    crashed = RunDir(tmp_path / "crashed")
    first = ForecastingTrainer(load_config(RECIPE, settings), crashed, quiet=True)
    step_on_group = first._step_on_group

    def crash_at_step_six(group, checks):
        if first.progress.step == 5:
            raise Crash
        step_on_group(group, checks)

    first._step_on_group = crash_at_step_six
    with pytest.raises(Crash):
        first.train()
    resumed = ForecastingTrainer(load_config(RECIPE, settings), crashed, quiet=True)
    assert resumed.progress.step == 4
    resumed.train()
    ours = load_checkpoint(crashed.last_checkpoint)
    theirs = load_checkpoint(reference.last_checkpoint)
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    for key, state in theirs["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(ours["optimizer"]["state"][key][field], value), (key, field)
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])
    assert crashed.metrics_log.read_text() != ""
    steps = [json.loads(line)["step"] for line in crashed.metrics_log.read_text().splitlines()]
    assert steps == [3, 6, 8]


# -- the commands -------------------------------------------------------------------------


def test_forecast_writes_one_row_per_series_and_step(tmp_path: Path, trained: Path) -> None:
    history = write_series(
        tmp_path / "history.csv",
        {"north": seasonal_values(60, 1), "south": seasonal_values(50, 2, 40)},
    )
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["forecast", str(trained), "--input", str(history), "--horizon", "4", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["id", "time", "median", "lower_80", "upper_80"]
    assert [(r["id"], r["time"]) for r in rows] == [
        ("north", "2024-01-03 12:00:00"),
        ("north", "2024-01-03 13:00:00"),
        ("north", "2024-01-03 14:00:00"),
        ("north", "2024-01-03 15:00:00"),
        ("south", "2024-01-03 02:00:00"),
        ("south", "2024-01-03 03:00:00"),
        ("south", "2024-01-03 04:00:00"),
        ("south", "2024-01-03 05:00:00"),
    ]
    for row in rows:
        assert float(row["lower_80"]) <= float(row["median"]) <= float(row["upper_80"])
    south = [float(r["median"]) for r in rows if r["id"] == "south"]
    assert np.mean(south) > 30  # each series keeps its own level (scaled per window)


def test_forecast_of_a_bad_file_is_one_error_line(tmp_path: Path, trained: Path) -> None:
    path = bad_file(tmp_path, "id,time,value\na,2024-01-01 00:00,1\na,2024-01-01 01:00,abc\n")
    runner = CliRunner()
    result = runner.invoke(app, ["forecast", str(trained), "--input", str(path)])
    assert result.exit_code != 0
    assert result.output.strip() == (
        f"s2s: error: {path}: line 3, column 'value': not a number: 'abc'"
    )
    result = runner.invoke(app, ["forecast", str(trained), "--input", str(path), "--horizon", "7"])
    assert "--horizon 7: the run forecasts at most 6 steps" in result.output


def test_plot_info_and_curves_serve_a_forecasting_run(tmp_path: Path, trained: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "forecast.png"
    result = runner.invoke(app, ["plot", str(trained), "--forecast", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    curves = tmp_path / "curves.png"
    assert runner.invoke(app, ["plot", str(trained), "--out", str(curves)]).exit_code == 0
    assert curves.is_file()
    result = runner.invoke(app, ["info", str(trained)])
    assert result.exit_code == 0, result.output
    assert "vocabulary  none (numbers in, numbers out)" in result.output
    assert "train 952 values of 1 series" in result.output


def test_the_forecasting_benchmark_reports_both_speeds(tmp_path: Path, data: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import bench_forecast

    out = tmp_path / "bench.json"
    argv = ["--recipe", str(RECIPE), "--steps", "2", "--warmup", "1", "--windows", "8"]
    argv += [arg for item in overrides(data) for arg in ("--set", item)]
    assert bench_forecast.main([*argv, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["train"]["windows_per_s"] > 0 and results["forecast"]["windows_per_s"] > 0
    assert results["machine"]["threads"] == 1
