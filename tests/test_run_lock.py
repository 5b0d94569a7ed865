"""A run directory serves one `s2s train` at a time, and `--restart` with new [tokenizer]
settings trains a new tokeniser instead of silently keeping the old one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.tokenizer import Tokenizer

HOLD_LOCK = """
import sys, time
from pathlib import Path
from s2s.run_lock import lock_run_directory
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
