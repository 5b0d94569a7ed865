"""A run directory serves one `s2s train` at a time, and `--restart` with new [tokenizer]
settings trains a new tokeniser instead of silently keeping the old one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.data.tokenizer import Tokenizer

HOLD_LOCK = """
import sys, time
from pathlib import Path
from s2s.run.lock import lock_run_directory
lock_run_directory(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_training_on_a_busy_run_directory_is_refused(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=30, steps=2)
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(run), "-q"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message
    assert f"another `s2s train` (pid {holder.pid})" in message
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    # The holder is gone: its lock went with it, and training proceeds.
    result = CliRunner().invoke(app, ["train", str(recipe), "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output


def test_restart_with_new_tokenizer_settings_trains_a_new_tokenizer(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=60, steps=1)
    run = tmp_path / "run"
    train = ["train", str(recipe), "--out", str(run), "-q"]
    assert CliRunner().invoke(app, train).exit_code == 0
    assert Tokenizer(run / "spm.model").vocab_size == 300
    result = CliRunner().invoke(app, [*train, "--restart", "--set", "tokenizer.vocab_size=200"])
    assert result.exit_code == 0, result.output
    assert Tokenizer(run / "spm.model").vocab_size == 200
    assert '"vocab_size": 200' in (run / "tokenizer.json").read_text()


def run_files(run: Path) -> dict[str, bytes]:
    """Every file under ``run``, by relative path, with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def hold_lock(run: Path) -> subprocess.Popen:
    """A process that holds ``run``'s lock until killed, as a live `s2s train` does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_restart_and_average_leave_a_busy_run_untouched(tmp_path: Path) -> None:
    """`train --restart` and `average` on a run another process is training are refused
    before they delete or write anything: every file stays, byte for byte."""
    recipe = tiny_recipe(tmp_path, pairs=30, steps=2)
    run = tmp_path / "run"
    keep = ["--set", "train.valid_every=1", "--set", "train.keep_last=2"]
    train = [sys.executable, "-m", "s2s", "train", str(recipe), "--out", str(run), "-q", *keep]
    trained = subprocess.run(train, capture_output=True, text=True)  # its lock ends with it
    assert trained.returncode == 0, trained.stderr
    assert (run / "checkpoints" / "step-1.pt").is_file()
    holder = hold_lock(run)
    try:
        before = run_files(run)
        commands = {
            "average": ["average", str(run), "--last", "2", "--no-validate", "-q"],
            "restart": ["train", str(recipe), "--out", str(run), "-q", "--restart"],
        }
        results = {name: CliRunner().invoke(app, args) for name, args in commands.items()}
        after = run_files(run)
    finally:
        holder.kill()
        holder.wait()
    for name, result in results.items():
        assert result.exit_code == 1, (name, result.output)
        message = result.output.strip()
        assert "\n" not in message, (name, message)
        assert message.startswith(f"s2s: error: {run}: another `s2s train` (pid {holder.pid})")
    assert after == before  # checkpoints, metrics, TensorBoard events: all still there
    assert {"metrics.jsonl", "checkpoints/step-2.pt", "checkpoints/last.pt"} <= set(after)
    assert any(name.startswith("tensorboard/") for name in after)
