"""Rows of docs/errors.md not covered elsewhere: each bad input is one line naming what and
where, with a non-zero exit status and no traceback. The last test keeps the table honest:
every test it names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, tiny_recipe

from s2s.data.corpus import ParallelText, TokenizedSplit
from s2s.errors import ConfigError, S2SError
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import filter_long


def s2s(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args], input=stdin, capture_output=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess, status: int = 1) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert stderr.startswith("s2s: error: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_recipe_that_is_not_utf8(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=5)
    recipe.write_bytes(recipe.read_bytes() + b"\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(invalid continuation byte at byte"):
        load_config(recipe)


def test_not_a_run_directory(tmp_path: Path) -> None:
    stderr = one_line_error(s2s("translate", str(tmp_path)))
    assert "not a run directory (no config.toml)" in stderr


def test_missing_input_file(trained_run: Path, tmp_path: Path) -> None:
    stderr = one_line_error(s2s("translate", str(trained_run), "--input", str(tmp_path / "no")))
    assert "input file not found" in stderr


def test_nbest_larger_than_the_beam(trained_run: Path) -> None:
    stderr = one_line_error(s2s("translate", str(trained_run), "--beam", "2", "--nbest", "3"))
    assert "--nbest 3 needs a beam of at least 3" in stderr


def test_cuda_asked_for_translation_but_absent(trained_run: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    stderr = one_line_error(s2s("translate", str(trained_run), "--device", "cuda"))
    assert "no CUDA device is available" in stderr


def test_missing_checkpoint_file(trained_run: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    stderr = one_line_error(s2s("translate", str(trained_run), "--checkpoint", str(missing)))
    assert f"{missing}: checkpoint not found" in stderr


def test_max_length_that_leaves_no_pair() -> None:
    split = TokenizedSplit(
        [[5] * 9, [5] * 12], [[6] * 3, [6] * 4], ParallelText(["a"] * 2, ["b"] * 2)
    )
    assert filter_long(split, 11) == [0]
    with pytest.raises(S2SError, match=r"train\.max_length = 8 leaves no training pair"):
        filter_long(split, 8)


def test_unknown_cell_through_the_cli(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=20)
    result = s2s(
        "train", str(recipe), "--out", str(tmp_path / "run"), "--set", "model.cell=lsmt", "-q"
    )
    stderr = one_line_error(result, status=2)
    assert "model.cell: unknown cell 'lsmt' (installed: " in stderr


ROW = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_row_of_the_errors_table_names_an_existing_test() -> None:
    table = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = [
        line
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| bad input |")  # not a header
    ]
    assert len(rows) >= 25
    for line in rows:
        tests = ROW.findall(line)
        assert tests, f"row without a test: {line}"
        for path, name in tests:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{path}::{name}"
