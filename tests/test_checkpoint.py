"""Checkpoints are untrusted input: corrupt, truncated or pickled-code files are refused."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from s2s.errors import S2SError
from s2s.run.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from s2s.tasks.loading import load_run


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "note": "x"})
    payload = load_checkpoint(path)
    assert payload["note"] == "x" and torch.equal(payload["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_truncated_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(S2SError, match="corrupt or truncated checkpoint"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_code_is_refused_without_running_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": Exploit()}, path, pickle_protocol=2)
    with pytest.raises(S2SError, match="refused to load"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(S2SError):
        load_checkpoint(plain)
    assert not (tmp_path / "pwned").exists()


def test_foreign_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"format_version": 99}, path)
    with pytest.raises(S2SError, match="checkpoint format 99 is not supported"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_refused(trained_run: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    payload["model"]["bridge.weight"] = torch.zeros(3, 3)
    payload.pop("format_version")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, payload)
    with pytest.raises(S2SError, match=r"bridge.weight has shape \(3, 3\)"):
        load_run(trained_run, bad, "cpu")


def test_crc_damage_inside_the_archive_is_found(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(20_000, dtype=torch.float32)}})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor's bytes: torch itself would load them
    data[middle : middle + 8] = bytes(8)
    path.write_bytes(bytes(data))
    with pytest.raises(S2SError, match=r"corrupt checkpoint: .*data/0 fails its CRC check"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", r"not an s2s checkpoint \(empty file\)"),
        (b"hello world\n", r"not an s2s checkpoint \(not a PyTorch zip archive\)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), r"not an s2s checkpoint \(not a PyTorch zip archive\)"),
    ],
)
def test_foreign_files_are_one_line_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    with pytest.raises(S2SError, match=expected):
        load_checkpoint(path)


def test_a_torch_file_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save(torch.ones(3), path)
    with pytest.raises(S2SError, match=r"c\.pt: not an s2s checkpoint$"):
        load_checkpoint(path)
    zipped = tmp_path / "z.pt"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("x.txt", "hi")
    with pytest.raises(S2SError, match="corrupt or truncated checkpoint"):
        load_checkpoint(zipped)


def test_refusal_names_the_import_without_torch_advice(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": Exploit()}, path)
    with pytest.raises(S2SError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "it asks for posix.system" in message or "it asks for nt.system" in message
    assert "weights_only" not in message  # torch's advice to turn the check off is not passed on


def test_malicious_checkpoint_through_the_cli(trained_run: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    torch.save({"format_version": 1, "model": Touch(str(marker))}, evil)
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "translate", str(trained_run), "--checkpoint", str(evil)],
        input=b"A dog.\n",
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.startswith("s2s: error: ") and stderr.count("\n") == 1
    assert "refused to load" in stderr
    assert not marker.exists()


class Touch:
    """Pickles as a call that would create ``path``: proof of execution if it appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_non_tensor_weights_are_refused(trained_run: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    payload["model"]["bridge.weight"] = [1.0, 2.0]
    payload.pop("format_version")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, payload)
    with pytest.raises(S2SError, match=r"bridge.weight is a list, not a tensor"):
        load_run(trained_run, bad, "cpu")


# Saves checkpoints in a loop, each holding its own number in every element, and prints the
# number once the checkpoint is in place.
WRITER = """
import sys, torch
from pathlib import Path
from s2s.run.checkpoint import save_checkpoint
path = Path(sys.argv[1])
for number in range(10_000):
    save_checkpoint(path, {"number": number, "model": {"w": torch.full((400_000,), number)}})
    print(number, flush=True)
"""


def test_a_kill_at_any_moment_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """SIGKILL a process that keeps rewriting one checkpoint, at several moments: the file
    always loads and is one of the versions written, never a mix or a torn file."""
    path = tmp_path / "last.pt"
    for delay in (0.0, 0.013, 0.031, 0.057):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        written = int(writer.stdout.readline())  # one complete version exists
        time.sleep(delay)
        writer.kill()
        writer.wait()
        payload = load_checkpoint(path)
        assert payload["number"] >= written
        assert torch.equal(payload["model"]["w"], torch.full((400_000,), payload["number"]))
        remove_stale_temporaries(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_crash_while_writing_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    real_fsync = os.fsync

    def crash(fd: int) -> None:
        raise KeyboardInterrupt  # stands for any abort between write and rename

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_disk_full_is_reported_and_the_old_file_kept(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(S2SError) as caught:
        save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    monkeypatch.undo()
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot write: disk full (No space left on device)")
    assert "previous version is kept" in message
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "keep.tmp").write_bytes(b"not ours: no leading dot")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".last.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp"]
