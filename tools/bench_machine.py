"""What a benchmark number depends on besides the code: the machine, the load from other
processes while it was taken, and memory at its peak. Used by tools/bench.py.

Timings on a shared machine are only comparable when nothing else ran: `wait_quiet` waits
for the other processes to calm down first, and `OtherLoad` records how busy they were
while a number was taken, so a reader can tell a clean number from a disturbed one.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from pathlib import Path
from typing import Any

import torch

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CORES = os.cpu_count() or 1
_STAT = Path("/proc/stat")
_STATUS = Path("/proc/self/status")


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """Everything a reader needs to place a number: CPU, cores, torch, threads, GPU."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": _CORES,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (None where /proc/stat is missing)."""
    if not _STAT.is_file():
        return None
    fields = [int(x) for x in _STAT.read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields) - idle) / _TICKS


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(max_seconds: float, threshold: float = 0.1, window: float = 2.0) -> dict[str, Any]:
    """Sleep until other processes use less than ``threshold`` of all cores over one
    ``window`` (this process sleeps meanwhile, so the load seen is theirs), or until
    ``max_seconds`` passed. Returns what was seen, for the record."""
    start = time.monotonic()
    if _busy_seconds() is None:
        return {"quiet": None, "waited_s": 0.0, "note": "no /proc/stat: cannot measure load"}
    load = 1.0
    while True:
        before = _busy_seconds() or 0.0
        time.sleep(window)
        load = ((_busy_seconds() or 0.0) - before) / (window * _CORES)
        waited = time.monotonic() - start
        if load < threshold or waited >= max_seconds:
            return {"quiet": load < threshold, "waited_s": round(waited, 1), "load": round(load, 3)}


class OtherLoad:
    """Context manager: the share of all cores that *other* processes kept busy during the
    block (machine-wide busy time minus this process's own CPU time), or None off Linux."""

    def __init__(self) -> None:
        self.share: float | None = None

    def __enter__(self) -> OtherLoad:
        self._start = (time.monotonic(), _busy_seconds(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, own0 = self._start
        busy1 = _busy_seconds()
        if busy0 is None or busy1 is None:
            return
        wall = max(time.monotonic() - wall0, 1e-9)
        others = (busy1 - busy0) - (_own_cpu_seconds() - own0)
        self.share = round(max(0.0, others / (wall * _CORES)), 3)


def _status_kib(field: str) -> int | None:
    if not _STATUS.is_file():
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else None


class PeakMemory:
    """Peak memory of the block, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, after resetting the peak).
    CPU: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
    minus its resident set when the block began: what the block added at its worst,
    tensors, allocator caches and Python objects alike. Where the peak cannot be reset,
    the lifetime peak (ru_maxrss) minus the resident set at the start is used, which
    over-reports when an earlier phase peaked higher; ``method`` says which was used.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        self._base = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.method = "cpu peak RSS (VmHWM) minus RSS at start"
        except OSError:
            self.method = "cpu lifetime peak RSS (ru_maxrss) minus RSS at start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            return
        if self._base is None:
            return
        if self.method.startswith("cpu peak"):
            peak = _status_kib("VmHWM") or 0
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.mib = round(max(0, peak - self._base) / 1024, 1)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
