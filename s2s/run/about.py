"""``about.json``: what only training knows about a run (its sessions, each with the
versions that ran it, and the size of its data), for the model card."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from typing import Any

from s2s.atomic import atomic_write_bytes
from s2s.data.corpus import TokenizedSplit
from s2s.run.directory import RunDir


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import torch

    from s2s import __version__
    from s2s.kernels.allocator import allocator_in_use
    from s2s.kernels.denormals import denormals_flushed

    return {
        "s2s": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "malloc": allocator_in_use(),
        "denormals": "flushed" if denormals_flushed() else "kept",
    }


def split_size(data: TokenizedSplit) -> dict[str, int]:
    return {
        "pairs": len(data.src),
        "src_tokens": sum(map(len, data.src)),
        "tgt_tokens": sum(map(len, data.tgt)),
    }


def record_session(
    run: RunDir, step: int, train: TokenizedSplit, valid: TokenizedSplit, used_pairs: int
) -> None:
    """Note in ``about.json`` that a training session starts at ``step`` (with which
    versions) and how large its data is; resumed runs list one session each."""
    data = {"train": {**split_size(train), "used_pairs": used_pairs}, "valid": split_size(valid)}
    record_session_data(run, step, data)


def record_session_data(run: RunDir, step: int, data: dict[str, Any]) -> None:
    """`record_session` for any task: ``data`` is what the card shows about its splits."""
    about = read_about(run)
    sessions = [s for s in about.get("sessions", []) if s.get("from_step", 0) < step]
    sessions.append({"from_step": step, "started": now(), **versions()})
    write_about(run, {"sessions": sessions, "data": data})


def write_about(run: RunDir, about: dict[str, Any]) -> None:
    atomic_write_bytes(run.path / "about.json", json.dumps(about, indent=1).encode())


def read_about(run: RunDir) -> dict[str, Any]:
    path = run.path / "about.json"
    if not path.is_file():
        return {}
    try:
        about = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return about if isinstance(about, dict) else {}
