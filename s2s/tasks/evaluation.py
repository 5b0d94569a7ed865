"""`s2s evaluate`: the run's task evaluates it."""

from __future__ import annotations

from pathlib import Path

from s2s.config import read_saved_config
from s2s.errors import S2SError
from s2s.run.directory import RunDir
from s2s.scores import Score
from s2s.tasks.registry import find_task
from s2s.tasks.task import EvaluationRequest


def evaluate_run(run_dir: Path, request: EvaluationRequest) -> list[Score]:
    """The scores of the run's model on the request's split (or files), as its task
    computes them."""
    config = read_saved_config(RunDir(run_dir).require().config_file)
    task = find_task(config.task.type)
    combined = request.ensemble or request.lm is not None
    if combined and not {"translate", "transcribe"} & set(task.serves):
        raise S2SError(
            f"{run_dir}: ensembles and --lm are for text and speech runs, not {task.name} runs"
        )
    return task.evaluate(run_dir, request)
