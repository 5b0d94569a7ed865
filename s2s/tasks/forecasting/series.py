"""Reading time series: a CSV or Parquet file (through HF `datasets`) of one or many series,
checked row by row, so a gap, an empty cell or a word where a number belongs is one line
naming the file, the line and the column."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s2s.errors import S2SError

if TYPE_CHECKING:
    import pandas as pd

    from s2s.config import ForecastConfig

TIME_FEATURES = 4  # sin and cos of the time of day and of the day of the week
SUFFIXES = (".csv", ".csv.gz", ".csv.xz", ".csv.bz2", ".parquet")


@dataclass
class Series:
    """One series in time order: its id, timestamps, values and known features."""

    id: str
    times: np.ndarray  # [T] datetime64[ns]
    values: np.ndarray  # [T] float32
    features: np.ndarray  # [T, F] float32: covariates, then time features
    step: np.timedelta64  # the spacing of the timestamps

    def __len__(self) -> int:
        return len(self.values)


def feature_count(config: ForecastConfig) -> int:
    """Known features per step: the covariate columns and the time features."""
    return len(config.covariates) + (TIME_FEATURES if config.time_features else 0)


def time_features(times: np.ndarray) -> np.ndarray:
    """[T] datetime64 -> [T, 4]: sin and cos of the time of day and of the day of the week."""
    minutes = (times - times.astype("datetime64[D]")).astype("timedelta64[m]").astype(np.float64)
    days = times.astype("datetime64[D]").astype(np.int64)
    day_angle = 2 * np.pi * minutes / 1440.0
    week_angle = 2 * np.pi * ((days + 3) % 7) / 7.0  # 1970-01-01 was a Thursday: Monday = 0
    columns = [np.sin(day_angle), np.cos(day_angle), np.sin(week_angle), np.cos(week_angle)]
    return np.stack(columns, axis=1).astype(np.float32)


def read_table(path: Path) -> pd.DataFrame:
    """The file as a DataFrame, read through HF datasets (CSV, compressed CSV, Parquet)."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()
    if not path.is_file():
        raise S2SError(f"{path}: file not found")
    if not path.name.endswith(SUFFIXES):
        raise S2SError(f"{path}: a series file is .csv (.gz, .xz, .bz2 ok) or .parquet")
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its reader logs what we raise
    try:
        with tempfile.TemporaryDirectory(prefix="s2s-series-") as cache:
            reader = Dataset.from_parquet if path.name.endswith(".parquet") else Dataset.from_csv
            table = reader(str(path), cache_dir=cache, keep_in_memory=True).to_pandas()
    except Exception as error:  # pyarrow's, pandas' and datasets' errors share no base
        raise S2SError(f"{path}: cannot read it as a table: {_root_cause(error)}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if table.empty:
        raise S2SError(f"{path}: no rows")
    return table


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error (datasets wraps the reader's)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text ({error.reason} at byte {error.start})"
    if "UTF8" in str(error):  # pyarrow's own decoder says it so
        return "not UTF-8 text"
    if "corresponds to no data" in str(error) or type(error).__name__ == "EmptyDataError":
        return "no rows"
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _numbers(path: Path, table: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float32; the first empty or non-numeric cell is an error naming its line
    (the header is line 1)."""
    import pandas as pd

    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        cell = raw.iloc[row]
        what = (
            "empty value" if pd.isna(cell) or str(cell).strip() == "" else f"not a number: {cell!r}"
        )
        raise S2SError(f"{path}: line {row + 2}, column {column!r}: {what}")
    return values.astype(np.float32)


def _timestamps(path: Path, table: pd.DataFrame, column: str) -> np.ndarray:
    import pandas as pd

    raw = table[column]
    times = pd.to_datetime(raw.astype(str), errors="coerce", format="mixed")
    bad = np.flatnonzero(times.isna().to_numpy() | raw.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise S2SError(
            f"{path}: line {row + 2}, column {column!r}: not a timestamp: {raw.iloc[row]!r}"
        )
    return times.to_numpy(dtype="datetime64[ns]")


def _check_spacing(
    path: Path, column: str, name: str, times: np.ndarray, rows: np.ndarray
) -> np.timedelta64:
    """The series' step (its most common spacing); a gap or a step back names its line."""
    if len(times) < 2:
        raise S2SError(f"{path}: series {name!r} has {len(times)} row(s); forecasting needs more")
    spacing = np.diff(times)
    kinds, counts = np.unique(spacing, return_counts=True)
    step = kinds[int(np.argmax(counts))]
    odd = np.flatnonzero(spacing != step)
    if step <= np.timedelta64(0) or odd.size:
        import pandas as pd

        at = int(odd[0]) if odd.size else 0
        before, after = pd.Timestamp(times[at]), pd.Timestamp(times[at + 1])
        raise S2SError(
            f"{path}: line {int(rows[at + 1]) + 2}, column {column!r}: gap in series {name!r}: "
            f"{before} is followed by {after} (the series steps every {pd.Timedelta(step)})"
        )
    return step


def read_series(path: Path, config: ForecastConfig) -> list[Series]:
    """Every series of the file, in order of first appearance."""
    table = read_table(path)
    wanted = [config.time_column, config.target_column, *config.covariates]
    if config.id_column:
        wanted.append(config.id_column)
    for column in wanted:
        if column not in table.columns:
            found = ", ".join(map(str, table.columns))
            raise S2SError(f"{path}: no column {column!r} (columns: {found})")
    values = _numbers(path, table, config.target_column)
    covariates = [_numbers(path, table, column) for column in config.covariates]
    times = _timestamps(path, table, config.time_column)
    ids = table[config.id_column].astype(str).to_numpy() if config.id_column else None
    order = list(dict.fromkeys(ids)) if ids is not None else [config.target_column]
    series = []
    for name in order:
        rows = np.flatnonzero(ids == name) if ids is not None else np.arange(len(values))
        step = _check_spacing(path, config.time_column, name, times[rows], rows)
        columns = [c[rows] for c in covariates]
        features = np.stack(columns, axis=1) if columns else np.zeros((len(rows), 0), np.float32)
        if config.time_features:
            features = np.concatenate([features, time_features(times[rows])], axis=1)
        series.append(Series(name, times[rows], values[rows], features.astype(np.float32), step))
    return series
