"""The file system under a run directory: a file in the way, a read-only or unwritable
place, a full disk. Each is one line naming the path and the problem, exit 1, and nothing
already in the run changes or is left behind half-written."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app

WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def run_files(run: Path) -> dict[str, bytes]:
    """Every file under ``run``, by relative path, with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def one_line(result, status: int = 1) -> str:
    """The CLI's error line, after checking it is one line and the exit status."""
    message = result.output.strip()
    assert result.exit_code == status, message
    assert message.startswith("s2s: error: ") and "\n" not in message, message
    return message


def refuse_writes_below(
    monkeypatch: pytest.MonkeyPatch, root: Path, code: int = errno.EROFS
) -> None:
    """Make every creation or write-open of a path below ``root`` fail with ``code``, as a
    read-only file system (or a folder without write permission) does even for root."""
    real_open, real_mkdir = os.open, Path.mkdir

    def below(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(root)

    def fake_open(path, flags, *args, **kwargs):
        if flags & WRITING and below(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(self: Path, *args, **kwargs) -> None:
        if below(self) and not self.is_dir():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    return tiny_recipe(tmp_path / "recipe", pairs=30, steps=1)


@pytest.fixture()
def copied_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared trained run (with its recipe beside it), free to be damaged."""
    folder = tmp_path / "copy"
    shutil.copytree(trained_run.parent, folder)
    (folder / "run" / ".lock").unlink(missing_ok=True)
    return folder / "run"


def test_out_naming_a_file_is_one_line(recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    message = one_line(CliRunner().invoke(app, ["train", str(recipe), "--out", str(out), "-q"]))
    assert f"{out}: it is a file, not a directory" in message
    assert out.read_text() == "my notes\n"


def test_out_under_a_file_is_one_line(recipe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("my notes\n")
    out = blocker / "runs" / "de-en"
    message = one_line(CliRunner().invoke(app, ["train", str(recipe), "--out", str(out), "-q"]))
    assert f"{out}: cannot create it: {blocker} is a file" in message
    assert blocker.read_text() == "my notes\n"


@pytest.mark.parametrize(
    ("code", "reason"), [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission")]
)
def test_a_new_run_where_nothing_can_be_written(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    """A read-only file system, or a parent folder without write permission."""
    parent = tmp_path / "readonly"
    parent.mkdir()
    out = parent / "run"
    refuse_writes_below(monkeypatch, parent, code)
    message = one_line(CliRunner().invoke(app, ["train", str(recipe), "--out", str(out), "-q"]))
    assert f"{out}: cannot write here: {reason}" in message
    assert not out.exists()


@pytest.mark.parametrize("restart", [False, True])
def test_a_run_on_a_read_only_file_system_is_kept_as_it_is(
    copied_run: Path, monkeypatch: pytest.MonkeyPatch, restart: bool
) -> None:
    recipe = copied_run.parent / "tiny.toml"
    before = run_files(copied_run)
    refuse_writes_below(monkeypatch, copied_run)
    args = ["train", str(recipe), "--out", str(copied_run), "-q", *["--restart"] * restart]
    message = one_line(CliRunner().invoke(app, args))
    assert f"{copied_run}: cannot write here: read-only file system" in message
    assert run_files(copied_run) == before


def test_average_on_a_read_only_run_is_one_line(
    copied_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = run_files(copied_run)
    refuse_writes_below(monkeypatch, copied_run)
    args = ["average", str(copied_run), "--last", "1", "--no-validate", "-q"]
    message = one_line(CliRunner().invoke(app, args))
    assert f"{copied_run}: cannot write here: read-only file system" in message
    assert run_files(copied_run) == before
