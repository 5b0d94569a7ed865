"""Command-line options that every decoding command shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.errors import S2SError

# command line -> the library function the command calls first, where threads are read
FIRST_CALL = {
    "translate": "s2s.api.load",
    "evaluate": "s2s.tasks.evaluation.evaluate_run",
    "transcribe": "s2s.api.load",
    "generate": "s2s.api.load",
    "score": "s2s.api.load",
    "average": "s2s.run.averaging.average_last",
}


@pytest.fixture
def torch_threads() -> Iterator[int]:
    """A thread count other than the current one; the current one is restored after."""
    before = torch.get_num_threads()
    yield 1 if before != 1 else 2
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", sorted(FIRST_CALL))
def test_threads_reach_torch_before_any_work(
    command: str, torch_threads: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def first_call(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise S2SError("stopped where the work starts")

    monkeypatch.setattr(FIRST_CALL[command], first_call)
    args = [command, str(tmp_path), "--threads", str(torch_threads)]
    result = CliRunner().invoke(app, args, input="a line\n")
    assert "stopped where the work starts" in result.output, result.output
    assert seen == [torch_threads]


@pytest.mark.parametrize("command", sorted(FIRST_CALL))
def test_without_threads_torch_keeps_its_own_default(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    def first_call(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise S2SError("stopped where the work starts")

    monkeypatch.setattr(FIRST_CALL[command], first_call)
    CliRunner().invoke(app, [command, str(tmp_path)], input="a line\n")
    assert seen == [before]


def test_threads_must_be_positive(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["translate", str(tmp_path), "--threads", "0"])
    assert result.exit_code == 2
