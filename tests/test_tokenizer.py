"""The run's tokeniser: trained before anything else for a new run, never silently trained
again under a checkpoint whose vocabulary is the old one's, and refused early for a corpus
that holds no text to train it on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import tiny_recipe


def s2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2s", *args], capture_output=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("s2s: error: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_resuming_without_the_tokenizer_model_is_refused(trained_run: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained_run.parent, tmp_path / "tiny"))
    run = folder / "run"
    (run / "spm.model").unlink()
    last = (run / "checkpoints" / "last.pt").read_bytes()
    stderr = one_line_error(s2s("train", str(folder / "tiny.toml"), "--out", str(run), "-q"))
    assert f"{run / 'spm.model'}: tokenizer model missing" in stderr
    assert "cannot be resumed without the tokenizer it was trained with" in stderr
    assert "--restart" in stderr
    assert not (run / "spm.model").exists()  # no new, unrelated vocabulary under the weights
    assert (run / "checkpoints" / "last.pt").read_bytes() == last


def test_a_new_run_trains_its_tokenizer_and_says_so(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=60, steps=1)
    run = tmp_path / "run"
    result = s2s("train", str(recipe), "--out", str(run))
    assert result.returncode == 0, result.stderr.decode()
    assert "training the unigram tokenizer (300 pieces)" in result.stderr.decode()
    assert (run / "spm.model").is_file()
