"""One writer per run directory: a second `s2s train` (or `--restart`, or `s2s average`) on
the same directory would delete or interleave checkpoints and metrics, so every command
that writes to a run takes its lock before touching anything in it, and is refused while
another one holds it.

The lock is an advisory ``flock`` on ``RUN/.lock``; the kernel drops it when the process
exits, however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from s2s.errors import S2SError

try:
    import fcntl
except ImportError:  # Windows: no flock; run directories are then not locked
    fcntl = None  # type: ignore[assignment]

# Lock files this process holds, kept open for its lifetime (the same process may build
# several trainers on one directory: tests, `--restart` after an error).
_held: dict[Path, int] = {}

_REASONS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "disk full",
    getattr(errno, "EDQUOT", errno.ENOSPC): "disk full",
}


def _blocking_file(path: Path) -> Path | None:
    """``path`` itself or the nearest folder above it that exists as a file, if any."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def unusable_run_directory(run_path: Path, error: OSError, advice: str = "") -> S2SError:
    """One line for a run directory that cannot be created or written (a file in the way,
    a read-only file system, no permission), naming the path and the problem."""
    blocker = _blocking_file(run_path)
    if blocker == run_path:
        problem = "it is a file, not a directory"
    elif blocker is not None:
        problem = f"cannot create it: {blocker} is a file"
    else:
        reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
        problem = f"cannot write here: {reason}"
    return S2SError(f"{run_path}: {problem}{advice}")


def _make_directory(run_path: Path, advice: str) -> None:
    try:
        run_path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise unusable_run_directory(run_path, error, advice) from None


def _open_lock_file(run_path: Path, advice: str) -> int:
    """Create the run directory if needed and open its lock file."""
    _make_directory(run_path, advice)
    try:
        return os.open(run_path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise unusable_run_directory(run_path, error, advice) from None


def _holder(descriptor: int) -> str:
    """Who holds the lock, as its holder wrote it: "`s2s train` (pid N)"."""
    pid, _, command = os.pread(descriptor, 128, 0).decode("ascii", "replace").strip().partition(" ")
    return f"`{command or 's2s train'}` (pid {pid or 'unknown'})"


def lock_run_directory(run_path: Path, command: str = "s2s train") -> None:
    """Take the run directory's lock (creating the directory), before anything in it is
    read, deleted or written; fail naming the command and process that holds it.
    ``command`` is how this process is named to the next one that tries."""
    advice = "; use another --out" if command == "s2s train" else ""
    if fcntl is None:
        _make_directory(run_path, advice)
        return
    lock_file = (run_path / ".lock").resolve()
    if lock_file in _held:
        return
    descriptor = _open_lock_file(run_path, advice)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(descriptor)
        os.close(descriptor)
        raise S2SError(
            f"{run_path}: another {holder} is using this run directory; "
            + ("wait for it, stop it, or use another --out" if advice else "wait for it or stop it")
        ) from None
    _held[lock_file] = descriptor
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()} {command}\n".encode("ascii"), 0)
    except OSError as error:  # a full disk; the lock itself is held
        raise unusable_run_directory(run_path, error, advice) from None
