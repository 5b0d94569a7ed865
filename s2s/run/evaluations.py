"""``evaluations.jsonl``: the scores `s2s evaluate` appends, one record per evaluation,
for the model card."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s2s.atomic import append_line
from s2s.errors import S2SError
from s2s.run.about import now
from s2s.run.directory import RunDir
from s2s.scores import Score

log = logging.getLogger(__name__)


def record_evaluation(
    run_path: Path,
    split: str,
    checkpoint: Path,
    beam: int | None,
    scores: list[Score],
    decode_overrides: Sequence[str] = (),
    precision: str | None = None,
) -> None:
    """Append one `s2s evaluate` result to ``evaluations.jsonl`` (for the model card),
    with the ``--set decode.key=value`` it was decoded under, if any, and the precision it
    decoded in (`s2s.kernels.precision.decoding_precision`), which can move scores a little."""
    record = {
        "split": split,
        "checkpoint": checkpoint.name,
        "beam": beam,
        **({"precision": precision} if precision else {}),
        **({"set": list(decode_overrides)} if decode_overrides else {}),
        "scores": {score.name: round(score.score, 2) for score in scores},
        "signatures": {score.name: score.signature for score in scores},
        "time": now(),
    }
    path = RunDir(run_path).evaluations_log
    try:
        append_line(path, json.dumps(record))
    except S2SError as error:  # a read-only run directory still gets its scores printed
        log.warning("cannot record the scores: %s", error)


def latest_evaluations(run: RunDir) -> dict[str, dict[str, Any]]:
    """The most recent evaluation of each split."""
    path = run.evaluations_log
    latest: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "split" in record:
                latest[record["split"]] = {k: v for k, v in record.items() if k != "split"}
    return latest
