"""Checkpoints: written atomically, loaded as untrusted input (weights_only, versioned)."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from s2s.errors import S2SError

FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``:
    a crash leaves the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise S2SError(f"{path}: cannot write checkpoint: {error.strerror or error}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without running any pickled code; one-line errors for bad files."""
    if not path.is_file():
        raise S2SError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise S2SError(f"{path}: refused to load (not a plain s2s checkpoint): {first}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise S2SError(f"{path}: corrupt or truncated checkpoint: {first}") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise S2SError(f"{path}: not an s2s checkpoint")
    if payload["format_version"] != FORMAT_VERSION:
        raise S2SError(
            f"{path}: checkpoint format {payload['format_version']} is not supported "
            f"(this s2s reads format {FORMAT_VERSION})"
        )
    return payload
