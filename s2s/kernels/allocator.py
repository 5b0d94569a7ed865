"""tcmalloc in place of glibc's malloc, where the system has it.

Training allocates and frees the same large tensors at every step: the logits of a
`recipes/mt.toml` batch alone are over 100 MB. glibc serves blocks that large with fresh
pages from the kernel and hands them back when they are freed, so every step page-faults
its memory in again, zeroed: about 180 000 page faults per fp32 training step of that
recipe on this project's CPU. tcmalloc keeps freed memory for reuse; the recipe trained 27 %
faster in fp32 and 36 % faster in bf16 under it, with flat memory (docs/performance-log.md). Raising
glibc's own thresholds with mallopt saved the page faults too, but its heap fragmented and
bf16 training grew past 4.9 GB; jemalloc gave memory back as eagerly as glibc and was no
faster.

tcmalloc is not on PyPI; systems ship it (Debian and Ubuntu: libtcmalloc-minimal4; conda:
gperftools). An allocator replaces malloc only when it is loaded before the program starts,
so the `s2s` command starts itself once more, with the same interpreter options and
arguments and tcmalloc in LD_PRELOAD, before it has imported torch or read any input.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from s2s.kernels.env_switch import switch_on

# S2S_TCMALLOC=0 keeps the system's allocator; 1, the default, uses tcmalloc where installed.
SWITCH = "S2S_TCMALLOC"
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")


def tcmalloc_library() -> str | None:
    """The name of an installed tcmalloc library, as the dynamic loader finds it, or None."""
    for name in TCMALLOC_NAMES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def tcmalloc_restart(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]] | None:
    """The command line and environment that run this process's command line ``argv``
    (``sys.orig_argv``: the interpreter, its options, then the script or ``-m s2s`` and
    the arguments) again under tcmalloc, or None to go on as is: off Linux, with
    S2S_TCMALLOC=0, without tcmalloc, or when LD_PRELOAD is set already (by the user, who
    chose, or by this restart, which must happen once)."""
    wanted = switch_on(environ, SWITCH, on="tcmalloc", off="the system's malloc")
    if not sys.platform.startswith("linux") or not wanted:
        return None
    if environ.get("LD_PRELOAD"):
        return None
    library = tcmalloc_library()
    if library is None:
        return None
    return [sys.executable, *argv[1:]], {**environ, "LD_PRELOAD": library}


def restart_under_tcmalloc() -> None:
    """Replace this process (same pid, same open files) by s2s under tcmalloc, when
    `tcmalloc_restart` says so; otherwise return."""
    restart = tcmalloc_restart(sys.orig_argv, os.environ)
    if restart is not None:
        command, environ = restart
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, command, environ)


def allocator_in_use() -> str:
    """Which malloc this process runs on: tcmalloc, jemalloc, glibc or system (training
    speed depends on it, so run directories record it)."""
    maps = Path("/proc/self/maps")
    mapped = maps.read_text(encoding="utf-8", errors="replace") if maps.is_file() else ""
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in mapped:
            return name
    return "glibc" if platform.libc_ver()[0] == "glibc" else "system"
