"""What exact resume needs besides weights and optimiser: every RNG state, a check that the
recipe still describes the saved model, and a metrics log that matches the checkpoint.

A resumed run replays the steps after its last checkpoint; with the RNG states restored
(dropout included) and the batch order rebuilt from seed and epoch, the replay is the same
computation, so on CPU with one thread it ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import random
import tomllib
from pathlib import Path
from typing import Any

import torch

from s2s.atomic import atomic_write_bytes
from s2s.config import Config, config_from_dict
from s2s.errors import S2SError
from s2s.run.cell_record import resolve_cell_options

try:  # numpy is not used by s2s itself, but cell plugins may draw from its global RNG
    import numpy
except ImportError:  # pragma: no cover - numpy comes with datasets
    numpy = None  # type: ignore[assignment]

log = logging.getLogger("s2s.train")

# Sections whose keys decide the model's parameters or what they compute (the tokeniser
# decides the vocabulary); dropout only regularises training, so it may change on resume.
MODEL_SECTIONS = ("model", "tokenizer")
FREE_MODEL_KEYS = frozenset({"model.dropout"})
RESUME_KEYS = ("model", "optimizer", "schedule", "scaler", "rng", "progress")
# Keys that only say how a new model's parameters start; a resumed run has already started.
START_KEYS = ("init", "init_range")


def seed_all(seed: int) -> None:
    """Seed every generator that `capture_rng` saves."""
    random.seed(seed)
    torch.manual_seed(seed)  # CUDA generators included
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, as plain data a safe load accepts."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if numpy is not None:
        np_state = numpy.random.get_state(legacy=False)
        np_state["state"]["key"] = np_state["state"]["key"].tolist()
        state["numpy"] = np_state
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`; states missing from older checkpoints are left as seeded."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if numpy is not None and "numpy" in state:
        np_state = dict(state["numpy"])
        inner = dict(np_state["state"])
        inner["key"] = numpy.asarray(inner["key"], dtype=numpy.uint32)
        np_state["state"] = inner
        numpy.random.set_state(np_state)
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}"))
    return flat


def changed_keys(saved: Config, wanted: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    before = _flatten(saved.model_dump(mode="json"), "")
    after = _flatten(wanted.model_dump(mode="json"), "")
    keys = before.keys() | after.keys()
    return sorted(k.removeprefix(".") for k in keys if before.get(k) != after.get(k))


def model_changes(changed: list[str]) -> list[str]:
    """The keys among ``changed`` that change the model, not just how it is trained."""
    return [
        key for key in changed if key.split(".")[0] in MODEL_SECTIONS and key not in FREE_MODEL_KEYS
    ]


def saved_config(payload: dict[str, Any], origin: Path) -> Config:
    """The resolved recipe stored in a checkpoint."""
    text = payload.get("config")
    if not isinstance(text, str):
        raise S2SError(f"{origin}: checkpoint holds no config")
    try:
        return config_from_dict(tomllib.loads(text), str(origin))
    except tomllib.TOMLDecodeError as error:
        raise S2SError(f"{origin}: checkpoint config is malformed: {error}") from None


def keep_saved_start(payload: dict[str, Any], wanted: Config, origin: Path) -> None:
    """Give ``wanted`` the saved run's model.init and model.init_range: a resumed run
    continues from its weights, so its config should name how they started, whatever the
    recipe (or a changed default) says now."""
    saved = saved_config(payload, origin).model
    for key in START_KEYS:
        setattr(wanted.model, key, getattr(saved, key))


def check_resumable(payload: dict[str, Any], wanted: Config, origin: Path) -> None:
    """Refuse to resume a checkpoint that lacks training state or whose model the recipe
    no longer describes; the error names the keys."""
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise S2SError(
            f"{origin}: cannot resume: the checkpoint lacks {', '.join(missing)} "
            "(use --restart or another --out)"
        )
    saved = saved_config(payload, origin)
    check_ranking_metric(payload, saved, wanted, origin)
    compared = wanted.model_copy(deep=True)
    for config in (saved, compared):  # runs from before saved only the options given
        resolve_cell_options(config.model)
    changed = changed_keys(saved, compared)
    breaking = model_changes(changed)
    if breaking:
        raise S2SError(
            f"{origin}: the recipe changes the saved model ({', '.join(breaking)}); "
            "use --restart to start over or another --out"
        )
    if changed:
        log.info("resuming with changed keys: %s", ", ".join(changed))


def has_ranked(payload: dict[str, Any]) -> bool:
    """Whether the checkpoint's progress holds a best metric or best checkpoints."""
    try:
        progress = json.loads(payload.get("progress") or "{}")
    except (TypeError, json.JSONDecodeError):
        return False  # check_resumable's later load reports a damaged progress
    return isinstance(progress, dict) and bool(
        progress.get("best") or progress.get("best_metric") is not None
    )


def check_ranking_metric(
    payload: dict[str, Any], saved: Config, wanted: Config, origin: Path
) -> None:
    """Refuse a new train.early_stopping_metric once checkpoints are ranked by the old one:
    its stored values (kept checkpoints, best so far, patience) cannot be compared with the
    new metric's, and the checkpoints the new one would have kept are gone."""
    before = saved.train.early_stopping_metric
    after = wanted.train.early_stopping_metric
    if before != after and has_ranked(payload):
        raise S2SError(
            f"{origin}: train.early_stopping_metric changed from {before!r} to {after!r}, "
            f"but the run's best checkpoints and patience are ranked by {before!r}; "
            f"keep {before!r}, or use --restart or another --out"
        )


def trim_metrics_log(path: Path, step: int) -> int:
    """Drop records written after the checkpoint at ``step`` (the resumed run writes them
    again) and a line torn by a kill; returns how many lines were dropped."""
    if not path.is_file():
        return 0
    kept: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        later = isinstance(record, dict) and isinstance(record.get("step"), int)
        if not (later and record["step"] > step):
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode("utf-8"))
    return len(lines) - len(kept)


def read_last_record(path: Path) -> dict[str, Any]:
    """The last validation record of a metrics log, or {} if there is none."""
    if not path.is_file():
        return {}
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return record
    return {}
