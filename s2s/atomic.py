"""Every write into a run directory goes through here, so that a crash, a kill or a full
disk at any moment leaves the old file or the new one (never a torn one), a failed write is
one line naming the file, and no temporary outlives its write.

Temporaries are named ``.NAME.XXXXXXXX.tmp`` (files and folders alike), beside the file
they become; `remove_stale_temporaries` deletes those a killed process left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from s2s.errors import S2SError

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
TEMPORARY = ".*.tmp"  # the glob of every temporary name made here
DATASETS_TEMPORARY = "tmp????????"  # HF datasets' own: earlier s2s left them in cache/


def write_error(path: Path, error: OSError, kept: str = "the previous version is kept") -> S2SError:
    """One line for a failed write of ``path``: ``PATH: cannot write: disk full (...)``."""
    reason = error.strerror or str(error)
    if error.errno in _DISK_FULL:
        reason = f"disk full ({reason})"
    return S2SError(f"{path}: cannot write: {reason}" + (f"; {kept}" if kept else ""))


def fsync_folder(folder: Path) -> None:
    """Make a rename itself durable (POSIX); folders cannot be opened on Windows."""
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


def _temporary_name(path: Path) -> dict[str, str]:
    return {"dir": str(path.parent), "prefix": f".{path.name}.", "suffix": ".tmp"}


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a crash
    at any moment leaves the old file or the new one, never a torn one. A failed write
    (disk full included) removes the temporary file and raises a one-line S2SError."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(**_temporary_name(path))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise write_error(path, error) from None
    finally:  # also on KeyboardInterrupt: never leave a half-written temporary behind
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    fsync_folder(path.parent)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A scratch folder beside ``path`` for a writer that insists on writing files itself
    (HF datasets): it writes ``scratch / path.name``, which is renamed to ``path`` when the
    block ends without error. The scratch folder and anything else in it are always
    removed; an OSError (a full disk) becomes one line naming ``path``."""
    scratch: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(**_temporary_name(path)))
        yield scratch / path.name
        os.replace(scratch / path.name, path)
    except OSError as error:
        raise write_error(path, error, kept="") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    fsync_folder(path.parent)


def append_line(path: Path, line: str, kept: str = "") -> None:
    """Append one line to a log (metrics.jsonl); on a failed write (a full disk) cut the
    file back to its old end, so no torn line stays, and raise one line naming the file."""
    data = memoryview(line.encode("utf-8") + b"\n")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)
    except OSError as error:
        raise write_error(path, error, kept) from None


def remove_stale_temporaries(folder: Path, *patterns: str) -> list[Path]:
    """Delete the temporaries (files and folders named like TEMPORARY, and ``patterns``) a
    killed process left in ``folder``: they are never valid files."""
    if not folder.is_dir():
        return []
    stale = [p for pattern in (TEMPORARY, *patterns) for p in folder.glob(pattern)]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
