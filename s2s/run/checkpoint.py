"""Checkpoints: written atomically, loaded as untrusted input (weights_only, versioned).

A checkpoint is the zip archive `torch.save` writes. Loading checks, in order, that the file
is a zip archive, that every member passes its CRC-32 check (torch itself does not look), that
the pickle inside names nothing but tensors and plain data (`weights_only=True`: nothing in
the file is ever executed), and that it carries a format version this s2s reads.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from s2s.atomic import atomic_write_bytes, remove_stale_temporaries
from s2s.errors import S2SError

__all__ = [
    "AVERAGED_FILE",
    "STEP_FILE",
    "CheckpointNotFound",
    "atomic_write_bytes",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"
# the validated weights training saves as checkpoints/step-N.pt (kept, pruned, averaged)
STEP_FILE = re.compile(r"step-(\d+)\.pt")
# a budgeted run's end may make the average of its last N step checkpoints its default
AVERAGED_FILE = re.compile(r"averaged-last-(\d+)\.pt")


class CheckpointNotFound(S2SError):
    """No file at the checkpoint's path (perhaps pruned by training a moment ago)."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Serialise in memory first, so a disk error surfaces as OSError from a plain write."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_archive(path: Path, handle: BinaryIO) -> None:
    """Refuse files that are not zip archives, and archives whose bytes were damaged."""
    magic = handle.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        what = "empty file" if not magic else "not a PyTorch zip archive"
        raise S2SError(f"{path}: not an s2s checkpoint ({what})")
    try:
        with zipfile.ZipFile(handle) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise S2SError(f"{path}: corrupt or truncated checkpoint: {_first_line(error)}") from None
    if damaged is not None:
        raise S2SError(f"{path}: corrupt checkpoint: {damaged} fails its CRC check")


def _refusal(path: Path, error: pickle.UnpicklingError) -> S2SError:
    """Name what the file tried to load, without torch's advice to turn the check off."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f"it asks for {found.group(1)}" if found else "it holds unsupported pickle data"
    return S2SError(
        f"{path}: refused to load (not a plain s2s checkpoint): {what}; "
        "a checkpoint may hold only tensors and plain data"
    )


def _open_checkpoint(path: Path) -> BinaryIO:
    """Open ``path`` for reading; a missing file is `CheckpointNotFound`."""
    if path.is_dir():
        raise CheckpointNotFound(f"{path}: checkpoint not found")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CheckpointNotFound(f"{path}: checkpoint not found") from None
    except OSError as error:
        raise S2SError(f"{path}: cannot read: {error.strerror or error}") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without running any pickled code; one-line errors for bad files.
    The file is opened once and read through that handle, so training pruning or replacing
    it meanwhile cannot leave the reader with half of one file or none."""
    with _open_checkpoint(path) as handle:
        _check_archive(path, handle)
        handle.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns about pickle protocols on bad files
                payload = torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise _refusal(path, error) from None
        except Exception as error:  # a damaged archive fails in many ways; all mean the same
            raise S2SError(
                f"{path}: corrupt or truncated checkpoint: {_first_line(error)}"
            ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise S2SError(f"{path}: not an s2s checkpoint")
    if payload["format_version"] != FORMAT_VERSION:
        raise S2SError(
            f"{path}: checkpoint format {payload['format_version']!r} is not supported "
            f"(this s2s reads format {FORMAT_VERSION})"
        )
    return payload
