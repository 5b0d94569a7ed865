"""The file system under a run directory: a file in the way, a read-only or unwritable
place, a full disk. Each is one line naming the path and the problem, exit 1, and nothing
already in the run changes or is left behind half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import make_trainer, tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.run.checkpoint import load_checkpoint

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


def fill_disk_below(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """HF datasets' Arrow writes of files below ``root`` fail with a full disk: writing a
    batch, and again flushing the file when the writer is closed after that error."""
    from datasets.arrow_writer import ArrowWriter

    def failing(method):
        def write(self: ArrowWriter, *args, **kwargs):
            if self._path and Path(self._path).is_relative_to(root):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return method(self, *args, **kwargs)

        return write

    for name in ("write_batch", "write_table", "finalize"):
        monkeypatch.setattr(ArrowWriter, name, failing(getattr(ArrowWriter, name)))


def test_a_full_disk_while_caching_the_data_is_one_line_and_leaves_no_temporary(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokenised-data cache is written by HF datasets; a full disk there (flushing the
    table, and again closing it) is one line naming the cache, and no temporary stays."""
    out = tmp_path / "run"
    fill_disk_below(monkeypatch, out)
    message = one_line(CliRunner().invoke(app, ["train", str(recipe), "--out", str(out), "-q"]))
    assert f"{out / 'cache'}" in message
    assert ": cannot write: disk full (No space left on device)" in message
    assert sorted(p.name for p in (out / "cache").iterdir()) == []
    monkeypatch.undo()  # disk space again: the same command trains
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert [p.suffix for p in (out / "cache").iterdir()] == [".arrow", ".arrow"]


def test_start_up_removes_every_kind_of_temporary_a_killed_run_leaves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    leftovers = [
        run / ".config.toml.k2j3h4g5.tmp",
        run / "checkpoints" / ".last.pt.a1b2c3d4.tmp",
        run / "cache" / "tmpx8_3kq0z",  # HF datasets' own, from earlier versions of s2s
        run / "cache" / ".train-0123456789abcdef.arrow.q1w2e3r4.tmp" / "train-0123.arrow",
        run / "cache" / "archives" / ".clips.tar-0123456789abcdef.z9y8x7w6.tmp" / "a.wav",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    (run / "cache" / "notes.txt").write_bytes(b"not ours to delete")
    make_trainer(tmp_path)
    left = {str(p.relative_to(run)) for p in run.rglob("*")}
    assert not any(".tmp" in name or "/tmp" in name for name in left), left
    assert "cache/notes.txt" in left


def test_a_full_disk_while_logging_metrics_keeps_the_checkpoint_and_no_torn_line(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    real_write = os.write
    writes = {"metrics": 0}

    def write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            writes["metrics"] += 1
            if writes["metrics"] == 2:  # the second validation's record: half, then full
                return real_write(fd, bytes(data)[: len(data) // 2])
            if writes["metrics"] > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    args = ["train", str(recipe), "--out", str(out), "-q", "--set", "train.max_steps=2"]
    args += ["--set", "train.valid_every=1"]
    message = one_line(CliRunner().invoke(app, args))
    monkeypatch.undo()
    metrics = out / "metrics.jsonl"
    assert message.endswith(
        f"{metrics}: cannot write: disk full (No space left on device); "
        "the last checkpoint is kept; free some space and run the same command to resume"
    )
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1]  # no torn line
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]
    result = CliRunner().invoke(app, args)  # space again: it resumes and finishes
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]
