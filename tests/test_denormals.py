"""Denormal floats are flushed to zero, in every thread torch starts afterwards, unless
S2S_FLUSH_DENORMALS=0; a malformed switch is a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from s2s.errors import S2SError
from s2s.kernels.denormals import SWITCH, flush_denormals_in_script, wanted

CAN_FLUSH = torch.set_flush_denormal(False)  # asks without turning it on in this process

# Denormals through a parallel operation, so torch's worker threads compute too
PROBE = """
import torch
from s2s.kernels.denormals import denormals_flushed, flush_denormals
flush_denormals()
torch.set_num_threads(2)
tiny = torch.full((4096, 256), 1e-39)
print(denormals_flushed(), bool((tiny * 1.0).count_nonzero() == 0))
"""


def probe(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != SWITCH}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, env={**environ, **env}, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def test_the_switch_reads_1_and_0_and_refuses_anything_else() -> None:
    assert wanted({}) and wanted({SWITCH: "1"})
    assert not wanted({SWITCH: "0"})
    with pytest.raises(S2SError, match=f"^{SWITCH}='off': use 1 .* or 0 "):
        wanted({SWITCH: "off"})


@pytest.mark.skipif(not CAN_FLUSH, reason="this CPU has no flush-to-zero mode")
def test_denormals_are_flushed_in_every_thread_unless_switched_off() -> None:
    assert probe() == "True True"
    assert probe(**{SWITCH: "0"}) == "False False"


def test_a_malformed_switch_stops_a_command_with_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "translate", str(tmp_path / "no-run")],
        input=b"A man.\n",
        capture_output=True,
        env={**os.environ, SWITCH: "yes"},
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.decode().strip().splitlines() == [
        f"s2s: error: {SWITCH}='yes': use 1 (flush denormals to zero) or 0 (keep them)"
    ]


def test_a_benchmark_script_stops_on_a_malformed_switch_with_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv(SWITCH, "2")
    with pytest.raises(SystemExit) as stopped:
        flush_denormals_in_script("bench")
    assert stopped.value.code != 0
    assert capsys.readouterr().err.splitlines() == [
        f"bench: {SWITCH}='2': use 1 (flush denormals to zero) or 0 (keep them)"
    ]
