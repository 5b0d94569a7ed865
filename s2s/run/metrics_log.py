"""A run's ``metrics.jsonl``: one JSON record per validation, appended by training. It is
strict JSON (any JSON reader, `jq` included, reads it): a non-finite score is written as null."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from s2s.atomic import append_line
from s2s.errors import S2SError

log = logging.getLogger(__name__)

# keys of a validation record that are not the task metric
LOSS_KEYS = ("valid_loss", "valid_ppl")


def strict_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with NaN and infinite numbers replaced by None (JSON has no such numbers)."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }


def append_record(path: Path, record: dict[str, Any], kept: str = "") -> None:
    """Append one validation record as a line of strict JSON; a failed write (a full disk)
    leaves no torn line and is one line naming the file, then ``kept``."""
    append_line(path, json.dumps(strict_record(record), allow_nan=False), kept)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All validation records, oldest first; a torn last line (a killed run) is skipped. A
    score that was not finite reads as None (older logs may hold NaN: read as it is)."""
    if not path.is_file():
        raise S2SError(f"{path}: no metrics log yet (training writes it at each validation)")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: line %d is not JSON, skipped", path, number)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def task_metric(records: list[dict[str, Any]]) -> str | None:
    """The key of the task metric (e.g. 'valid_bleu'): a valid_* key other than loss/ppl."""
    for record in records:
        for key in record:
            if key.startswith("valid_") and key not in LOSS_KEYS:
                return key
    return None
