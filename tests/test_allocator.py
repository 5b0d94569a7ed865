"""Running under tcmalloc: when s2s restarts itself with it, and how a run records it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from s2s.errors import S2SError
from s2s.kernels import allocator
from s2s.kernels.allocator import tcmalloc_library, tcmalloc_restart

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD")


@linux_only
def test_restarts_as_the_same_command_with_tcmalloc_preloaded(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    argv = ["python3", "-X", "faulthandler", "-m", "s2s", "translate", "runs/mt", "--beam", "5"]
    command, environ = tcmalloc_restart(argv, {"PATH": "/usr/bin", "OMP_NUM_THREADS": "2"})
    assert command == [sys.executable, *argv[1:]]  # interpreter options and all
    assert environ == {
        "PATH": "/usr/bin",
        "OMP_NUM_THREADS": "2",
        "LD_PRELOAD": "libtcmalloc_minimal.so.4",
    }


@pytest.mark.parametrize(
    "environ",
    [
        {"S2S_TCMALLOC": "0"},  # the user's switch
        {"LD_PRELOAD": "libjemalloc.so.2"},  # the user's own choice
        {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},  # restarted already: never a loop
    ],
)
def test_no_restart_when_the_user_chose_or_it_happened_already(monkeypatch, environ):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    assert tcmalloc_restart(["s2s", "train", "recipes/mt.toml"], environ) is None


def test_a_malformed_switch_is_an_error_naming_it(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    with pytest.raises(S2SError, match=r"S2S_TCMALLOC='off': use 1 \(tcmalloc\) or 0 "):
        tcmalloc_restart(["s2s", "train", "recipes/mt.toml"], {"S2S_TCMALLOC": "off"})


def test_no_restart_without_tcmalloc(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: None)
    assert tcmalloc_restart(["s2s", "train", "recipes/mt.toml"], {}) is None


@linux_only
@pytest.mark.skipif(tcmalloc_library() is None, reason="tcmalloc is not installed")
def test_a_preloaded_tcmalloc_is_the_allocator_in_use():
    probe = "from s2s.kernels.allocator import allocator_in_use; print(allocator_in_use())"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "LD_PRELOAD": tcmalloc_library()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "tcmalloc"
