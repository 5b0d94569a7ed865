"""Tasks are plugins: one registered in this module at test time trains through `s2s train`
and is evaluated by `s2s evaluate`, with nothing installed; `s2s tasks` lists the tasks,
and an unknown or broken task is a one-line error naming what is installed or who broke."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.data.corpus import ParallelText
from s2s.errors import ConfigError, S2SError
from s2s.run.metrics_log import read_metrics
from s2s.scores import Score
from s2s.tasks.recipe import load_config
from s2s.tasks.registry import find_task, register_task, task_table, unregister_task
from s2s.tasks.translation.task import TranslationTask

NAME = "exact_match_test"


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Percent of outputs equal to their reference."""
    same = sum(h == r for h, r in zip(hypotheses, references, strict=True))
    return 100.0 * same / max(len(references), 1)


class ExactMatchTask(TranslationTask):
    """Translation's model, data and search, validated and evaluated by exact match."""

    name: ClassVar[str] = NAME
    metrics: ClassVar[tuple[str, ...]] = ("exact", "loss")

    def validation_scores(self, hypotheses: list[str], text: ParallelText) -> dict[str, float]:
        return {"valid_exact": round(exact_match(hypotheses, text.tgt), 2)}

    def corpus_scores(self, hypotheses: list[str], text: ParallelText) -> list[Score]:
        value = exact_match(hypotheses, text.tgt)
        return [Score("exact", value, "exact-match", f"exact = {value:.2f}")]


@pytest.fixture
def registered() -> Iterator[None]:
    register_task(NAME, ExactMatchTask)
    yield
    unregister_task(NAME)


def task_recipe(folder: Path) -> Path:
    recipe = tiny_recipe(folder, pairs=120, steps=4)
    recipe.write_text(f'[task]\ntype = "{NAME}"\n' + recipe.read_text(encoding="utf-8"))
    return recipe


def test_a_task_registered_at_test_time_trains_and_evaluates(registered, tmp_path) -> None:
    recipe, out = task_recipe(tmp_path), tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(recipe), "--out", str(out), "--quiet"])
    assert trained.exit_code == 0, trained.output
    record = read_metrics(out / "metrics.jsonl")[-1]
    assert "valid_exact" in record and "valid_bleu" not in record
    assert 0.0 <= record["valid_exact"] <= 100.0
    evaluated = runner.invoke(app, ["evaluate", str(out), "--split", "valid", "--beam", "1"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "exact = " in evaluated.output and "signature: exact-match" in evaluated.output


def test_the_task_decides_the_default_metric_and_its_checks(registered, tmp_path) -> None:
    recipe = task_recipe(tmp_path)
    assert load_config(recipe).train.early_stopping_metric == "exact"
    with pytest.raises(ConfigError, match=f"a {NAME.replace('_', ' ')} run validates by exact"):
        load_config(recipe, ["train.early_stopping_metric=bleu"])


def test_s2s_tasks_lists_installed_and_registered_tasks(registered) -> None:
    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    for name in ("translation", "summarization", "language_model", "speech"):
        assert "s2s " in rows[name], rows[name]
    assert "registered at run time" in rows[NAME] and "exact, loss" in rows[NAME]


def test_an_unknown_task_names_the_installed_ones(tmp_path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=5)
    with pytest.raises(ConfigError) as error:
        load_config(recipe, ["task.type=weather"])
    message = str(error.value)
    assert "task.type: unknown task 'weather' (installed: " in message
    assert "forecasting, language_model, speech, summarization, translation" in message
    assert "\n" not in message


def test_a_broken_task_is_one_line_naming_its_origin() -> None:
    def broken() -> TranslationTask:
        raise ImportError("No module named 'missing_dependency'")

    register_task("broken_test", broken)
    try:
        with pytest.raises(S2SError) as error:
            find_task("broken_test")
        assert str(error.value) == (
            "task 'broken_test' from registered at run time failed to load: "
            "ImportError: No module named 'missing_dependency'"
        )
        broken_row = [line for line in task_table() if line.startswith("broken_test")]
        assert "error: task 'broken_test'" in broken_row[0]
    finally:
        unregister_task("broken_test")


def test_built_in_tasks_come_from_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="s2s.tasks")}
    assert {"translation", "summarization", "language_model", "speech"} <= names
    for name in names & {"translation", "summarization", "language_model", "speech"}:
        assert find_task(name).name == name
