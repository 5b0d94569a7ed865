"""Decoding as mature toolkits offer it, through the commands and the Python API: ensembles
of runs, language-model fusion, sampling with n samples, and forced target prefixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, multi30k_lines, tiny_overrides, tiny_recipe, write_lines

import s2s
from s2s.errors import S2SError
from s2s.run.directory import RunDir
from s2s.tasks.recipe import load_config
from s2s.tasks.registry import make_trainer

LINES = ["A man is riding a bicycle.", "", "Two dogs play in the snow.", "A girl sings."]


def run_s2s(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def train(recipe: Path, out: Path, *overrides: str) -> Path:
    make_trainer(load_config(recipe, list(overrides)), RunDir(out), quiet=True).train()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two translation runs of one vocabulary (the second adopts the first's tokenizer),
    one of another vocabulary, and a language model of the first's vocabulary."""
    folder = tmp_path_factory.mktemp("features")
    recipe = tiny_recipe(folder / "data", pairs=300, steps=20)
    first = train(recipe, folder / "first")
    model = f"tokenizer.model={first / 'spm.model'}"
    second = train(recipe, folder / "second", model, "train.seed=2")
    other = train(recipe, folder / "other", "tokenizer.vocab_size=200")
    german = write_lines(folder / "german.txt", multi30k_lines("train.de.gz", 400))
    lm_recipe = ROOT / "recipes" / "lm.toml"
    lm_sets = [*tiny_overrides(folder / "lm-data", steps=20), model]
    lm_sets += [f'data.train.text="{german}"', f'data.valid.text="{german}"']
    lm = train(lm_recipe, folder / "lm", *lm_sets)
    return {"first": first, "second": second, "other": other, "lm": lm}


def test_an_ensemble_of_a_run_with_itself_translates_as_the_run(runs) -> None:
    first = str(runs["first"])
    alone = run_s2s("translate", first, "--beam", "3", "-q", stdin="\n".join(LINES) + "\n")
    twice = run_s2s("translate", first, first, "--beam", "3", "-q", stdin="\n".join(LINES) + "\n")
    assert alone.returncode == 0 and twice.returncode == 0, twice.stderr
    assert twice.stdout == alone.stdout and len(alone.stdout.splitlines()) == len(LINES)


def test_an_ensemble_of_two_runs_decodes_every_line_in_order(runs) -> None:
    model = s2s.load([runs["first"], runs["second"]], device="cpu")
    outputs = model.translate(LINES, beam=3)
    assert len(outputs) == len(LINES) and outputs[1] == ""
    assert outputs == [model.translate([line], beam=3)[0] for line in LINES]


def test_runs_of_other_vocabularies_are_refused_in_one_line(runs) -> None:
    result = run_s2s("translate", str(runs["first"]), str(runs["other"]), stdin="x\n")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"s2s: error: {runs['other']}: its vocabulary is")
    with pytest.raises(S2SError, match=r"not .*'s target vocabulary: train the language model"):
        s2s.load(runs["other"], device="cpu", lm=runs["lm"])


def test_fusion_with_weight_zero_is_the_run_and_a_weight_changes_scores(runs) -> None:
    plain = s2s.load(runs["first"], device="cpu").translate(LINES, beam=3, nbest=2)
    unweighted = s2s.load(runs["first"], device="cpu", lm=runs["lm"], lm_weight=0.0)
    assert unweighted.translate(LINES, beam=3, nbest=2) == plain
    fused = run_s2s(
        "evaluate", str(runs["first"]), "--split", "test", "--beam", "2",
        "--lm", str(runs["lm"]), "--lm-weight", "0.5",
    )  # fmt: skip
    assert fused.returncode == 0, fused.stderr
    assert fused.stdout.startswith("BLEU = ")


def test_seeded_samples_repeat_and_n_samples_come_per_line(runs) -> None:
    args = ["translate", str(runs["first"]), "--sample", "--nbest", "3", "--seed", "4", "-q"]
    first = run_s2s(*args, "--temperature", "1.5", stdin="A man.\nA dog.\n")
    again = run_s2s(*args, "--temperature", "1.5", stdin="A man.\nA dog.\n")
    assert first.returncode == 0, first.stderr
    rows = first.stdout.splitlines()
    assert first.stdout == again.stdout
    assert [row.split(" ||| ")[0] for row in rows] == ["0", "0", "0", "1", "1", "1"]


def test_a_prefix_file_forces_the_start_of_each_output(runs, tmp_path: Path) -> None:
    prefixes = write_lines(tmp_path / "prefixes.de", ["Ein Mann", "", "Zwei Hunde", ""])
    result = run_s2s(
        "translate", str(runs["first"]), "--prefix-file", str(prefixes), "--beam", "3", "-q",
        stdin="\n".join(LINES) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.splitlines()
    assert outputs[0].startswith("Ein Mann") and outputs[2].startswith("Zwei Hunde")
    assert outputs[1] == ""  # an empty input stays empty


def test_a_prefix_file_of_another_length_is_a_one_line_error(runs, tmp_path: Path) -> None:
    prefixes = write_lines(tmp_path / "short.de", ["Ein Mann"])
    result = run_s2s(
        "translate", str(runs["first"]), "--prefix-file", str(prefixes), "-q",
        stdin="\n".join(LINES) + "\n",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "s2s: error: --prefix-file has 1 lines: none for input line 2 "
        "(one prefix per input line, empty for none)"
    )


def test_a_prefix_file_longer_than_the_input_is_an_error_after_the_outputs(
    runs, tmp_path: Path
) -> None:
    prefixes = write_lines(tmp_path / "long.de", ["Ein Mann", "", "Zwei", "", "Eine"])
    result = run_s2s(
        "translate", str(runs["first"]), "--prefix-file", str(prefixes), "-q",
        stdin="\n".join(LINES) + "\n",
    )  # fmt: skip
    assert result.returncode == 1 and len(result.stdout.splitlines()) == len(LINES)
    assert result.stderr.strip() == "s2s: error: --prefix-file has 5 lines but the input 4"


@pytest.mark.parametrize("top_p", ["0", "1.5"])
def test_a_top_p_outside_zero_to_one_is_refused_before_decoding(runs, top_p: str) -> None:
    result = run_s2s("translate", str(runs["first"]), "--sample", "--top-p", top_p, stdin="x\n")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"s2s: error: top_p {float(top_p)}: use a value in (0, 1]"
