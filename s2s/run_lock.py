"""One training process per run directory: a second `s2s train` on the same directory would
interleave checkpoints and metrics, so it is refused while the first one lives.

The lock is an advisory ``flock`` on ``RUN/.lock``; the kernel drops it when the process
exits, however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

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


def lock_run_directory(run_path: Path) -> None:
    """Take the run directory's lock, or fail naming the process that holds it."""
    if fcntl is None:
        return
    lock_file = (run_path / ".lock").resolve()
    if lock_file in _held:
        return
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise S2SError(
            f"{run_path}: another `s2s train` (pid {owner}) is using this run directory; "
            "wait for it, stop it, or use another --out"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[lock_file] = descriptor
