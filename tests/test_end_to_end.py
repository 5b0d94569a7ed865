"""A user's path through the CLI: train on a Multi30k slice, translate stdin, evaluate."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
from helpers import tiny_recipe

from s2s.kernels.allocator import tcmalloc_library

# the test environment's own allocator and floating-point choices, which each test sets
CHOICES = ("LD_PRELOAD", "S2S_TCMALLOC", "S2S_FLUSH_DENORMALS")


def s2s(*args: str, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        env={**{k: v for k, v in os.environ.items() if k not in CHOICES}, **env},
    )


def test_train_writes_a_self_contained_run_directory(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=200, steps=6)
    out = tmp_path / "run"
    result = s2s("train", str(recipe), "--out", str(out), "--set", "train.valid_every=3")
    assert result.returncode == 0, result.stderr.decode()
    for name in ("config.toml", "spm.model", "metrics.jsonl", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert {"valid_loss", "valid_ppl", "valid_bleu"} <= set(records[0])
    best = json.loads((out / "checkpoints" / "best.json").read_text())
    assert 1 <= len(best) <= 2 and all((out / "checkpoints" / b["file"]).is_file() for b in best)
    # the cached tokenisation is reused, not rebuilt, by a second run on the same directory
    cached = sorted(p.name for p in (out / "cache").iterdir())
    more = ("train", str(recipe), "--out", str(out), "--set", "train.max_steps=8", "-q")
    result = s2s(*more, S2S_TCMALLOC="0", S2S_FLUSH_DENORMALS="0")
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in (out / "cache").iterdir()) == cached
    # s2s trains under tcmalloc where the system has it (much faster), unless told not to,
    # and with denormals flushed to zero where the CPU can (fp32 training much faster)
    sessions = json.loads((out / "about.json").read_text())["sessions"]
    system = "glibc" if platform.libc_ver()[0] == "glibc" else "system"
    assert sessions[0]["malloc"] == ("tcmalloc" if tcmalloc_library() else system)
    assert sessions[1]["malloc"] == system
    can_flush = torch.set_flush_denormal(False)  # asks without turning it on here
    assert sessions[0]["denormals"] == ("flushed" if can_flush else "kept")
    assert sessions[1]["denormals"] == "kept"


def test_translate_keeps_line_count_order_and_empty_lines(trained_run: Path) -> None:
    lines = ["A man is riding a bicycle.", "", "Two dogs play in the snow.", "   ", "A girl."]
    stdin = ("\n".join(lines) + "\n").encode()
    for beam in ("1", "3"):
        result = s2s("translate", str(trained_run), "--beam", beam, stdin=stdin)
        assert result.returncode == 0, result.stderr.decode()
        output = result.stdout.decode().split("\n")
        assert output[-1] == ""
        output = output[:-1]
        assert len(output) == len(lines)
        assert output[1] == "" and output[3] == ""


def test_translate_is_the_same_from_a_pipe_and_a_file(trained_run: Path, tmp_path: Path) -> None:
    lines = ["A man in a red shirt.", "Children are playing outside.", "A dog runs."]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    piped = s2s("translate", str(trained_run), stdin=source.read_bytes())
    from_file = s2s("translate", str(trained_run), "--input", str(source), "--chunk-lines", "1")
    assert piped.returncode == from_file.returncode == 0
    assert piped.stdout == from_file.stdout


def test_translate_survives_invalid_utf8_and_reports_the_line(trained_run: Path) -> None:
    stdin = b"A man.\nA \xff\xfe dog.\nA cat.\n"
    result = s2s("translate", str(trained_run), "--beam", "1", stdin=stdin)
    assert result.returncode == 0
    assert len(result.stdout.decode().splitlines()) == 3
    assert "input line 2: invalid UTF-8" in result.stderr.decode()


def test_nbest_output(trained_run: Path) -> None:
    result = s2s("translate", str(trained_run), "--beam", "3", "--nbest", "3", stdin=b"A dog.\n")
    rows = result.stdout.decode().splitlines()
    assert len(rows) == 3 and all(row.startswith("0 ||| ") for row in rows)


def test_evaluate_prints_bleu_and_chrf_with_signatures(trained_run: Path, tmp_path: Path) -> None:
    hyps = tmp_path / "hyps.txt"
    result = s2s(
        "evaluate", str(trained_run), "--split", "test", "--beam", "2", "--output", str(hyps)
    )
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert text.startswith("BLEU = ") and "chrF2 = " in text
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in text
    assert len(hyps.read_text(encoding="utf-8").splitlines()) == 40


def test_missing_run_directory_is_a_one_line_error(tmp_path: Path) -> None:
    result = s2s("translate", str(tmp_path / "nope"), stdin=b"x\n")
    assert result.returncode == 1
    assert (
        result.stderr.decode().strip()
        == f"s2s: error: {tmp_path / 'nope'}: run directory not found"
    )


def test_unknown_split_names_the_known_ones(trained_run: Path) -> None:
    result = s2s("evaluate", str(trained_run), "--split", "dev")
    assert result.returncode == 1
    assert "no split 'dev' (splits: test, train, valid)" in result.stderr.decode()
