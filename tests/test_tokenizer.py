"""The run's tokeniser: trained before anything else for a new run, never silently trained
again under a checkpoint whose vocabulary is the old one's, and refused early for a corpus
that holds no text to train it on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_recipe

from s2s.data.tokenizer import train_tokenizers
from s2s.errors import S2SError
from s2s.tasks.recipe import load_config


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


@pytest.mark.parametrize("blank", [("train.en", "train.de"), ("train.de",)], ids=["both", "tgt"])
def test_a_corpus_of_blank_lines_is_refused_before_training_the_tokenizer(
    tmp_path: Path, blank: tuple[str, ...]
) -> None:
    recipe = tiny_recipe(tmp_path, pairs=20, steps=1)
    for name in blank:
        (tmp_path / name).write_text("\n \n\t\n  \n" * 5, encoding="utf-8")  # 20 lines
    run = tmp_path / "run"
    stderr = one_line_error(s2s("train", str(recipe), "--out", str(run)))
    named = " and ".join(f"data.train.{NAMES[n]} ({tmp_path / n})" for n in blank)
    verb = "hold" if len(blank) > 1 else "holds"
    assert f"s2s: error: {named} {verb} no text (only blank lines)" in stderr
    assert "nothing to train the tokenizer on" in stderr
    left = {path.name for path in run.iterdir()}
    assert not left & {"spm.model", "cache", "config.toml", "checkpoints"}, left


NAMES = {"train.en": "src", "train.de": "tgt"}


def test_tokenizer_training_on_blank_text_is_a_one_line_error(tmp_path: Path) -> None:
    """Speech transcripts reach the tokeniser without a file check of their own."""
    config = load_config(tiny_recipe(tmp_path, pairs=5)).tokenizer
    with pytest.raises(S2SError, match=r"^the training split holds no text \(only blank lines\)"):
        train_tokenizers(config, [], ["", "  ", "\t"], tmp_path / "run")
    assert not (tmp_path / "run" / "spm.model").exists()
