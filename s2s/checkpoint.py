"""Checkpoints: written atomically, loaded as untrusted input (weights_only, versioned).

A checkpoint is the zip archive `torch.save` writes. Loading checks, in order, that the file
is a zip archive, that every member passes its CRC-32 check (torch itself does not look), that
the pickle inside names nothing but tensors and plain data (`weights_only=True`: nothing in
the file is ever executed), and that it carries a format version this s2s reads.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from s2s.errors import S2SError

FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CheckpointNotFound(S2SError):
    """No file at the checkpoint's path (perhaps pruned by training a moment ago)."""


def _write_error(path: Path, error: OSError) -> S2SError:
    reason = error.strerror or str(error)
    if error.errno in _DISK_FULL:
        reason = f"disk full ({reason})"
    return S2SError(f"{path}: cannot write: {reason}; the previous version is kept")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the data itself is on disk
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a crash
    at any moment leaves the old file or the new one, never a torn one. A failed write
    (disk full included) removes the temporary file and raises a one-line S2SError."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise _write_error(path, error) from None
    finally:  # also on KeyboardInterrupt: never leave a half-written temporary behind
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    _fsync_folder(path.parent)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporaries a killed process left behind (they are never valid checkpoints)."""
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
