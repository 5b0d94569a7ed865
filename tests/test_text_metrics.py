"""Translation runs judged by whole-sequence correctness (WER, CER, exact match) as well as
BLEU and chrF, against one or several references per source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import multi30k_lines, tiny_recipe, write_lines

from s2s.errors import ConfigError, S2SError
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.metrics import bleu_and_chrf, error_rates, text_scores


def s2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args], capture_output=True, text=True, timeout=300
    )


def by_name(scores) -> dict[str, float]:
    return {s.name: round(s.score, 4) for s in scores}


# -- the metrics ------------------------------------------------------------------------------


def test_error_rates_score_each_output_against_its_closest_reference() -> None:
    # "a b c": 3 word edits from "x y z" but 1 from "a b d" (1 char edit of 5 too)
    scores = by_name(error_rates(["a b c"], [["x y z", "a b d"]]))
    assert scores == {"WER": round(100 / 3, 4), "CER": 20.0, "exact": 0.0}


def test_exact_match_counts_an_output_equal_to_any_reference_spaces_collapsed() -> None:
    scores = by_name(error_rates(["k a t", "d o g"], [["c a t", "k  a t"], ["d o g z"]]))
    assert scores["exact"] == 50.0
    assert scores["WER"] == round(100 * 1 / 7, 4)  # 0 edits of 3, then 1 deletion of 4


def test_an_empty_reference_counts_every_output_word_as_an_error() -> None:
    assert by_name(error_rates(["a b", ""], [[""], [""]])) == {
        "WER": 100.0,
        "CER": 100.0,
        "exact": 50.0,
    }


def test_a_reference_equal_to_the_output_gives_perfect_bleu_whatever_the_others() -> None:
    hypotheses = ["Ein Mann fährt Fahrrad .", "Zwei Hunde spielen im Schnee ."]
    one = by_name(bleu_and_chrf(hypotheses, [["Ein Hund schläft ."], ["Eine Katze ."]]))
    many = by_name(
        bleu_and_chrf(hypotheses, [["Ein Hund schläft .", hypotheses[0]], [hypotheses[1]]])
    )
    assert one["BLEU"] < 20 and many == {"BLEU": 100.0, "chrF2": 100.0}


def test_translation_evaluation_reports_five_scores_with_signatures() -> None:
    scores = text_scores(["a b c"], [["a b c"]])
    assert [s.name for s in scores] == ["BLEU", "chrF2", "WER", "CER", "exact"]
    assert scores[0].signature.startswith("nrefs:1|") and "jiwer:" in scores[2].signature


# -- recipes ----------------------------------------------------------------------------------


def add_second_references(recipe: Path) -> Path:
    """The recipe's test split scored against its German and a second reference file."""
    folder = recipe.parent
    write_lines(folder / "valid.alt.de", multi30k_lines("val.de.gz", 40)[::-1])
    text = recipe.read_text(encoding="utf-8")
    old = '[data.test]\nsrc = "valid.en"\ntgt = "valid.de"\n'
    assert old in text
    new = '[data.test]\nsrc = "valid.en"\ntgt = ["valid.de", "valid.alt.de"]\n'
    recipe.write_text(text.replace(old, new), encoding="utf-8")
    return recipe


def test_a_split_may_list_several_reference_files(tmp_path: Path) -> None:
    config = load_config(add_second_references(tiny_recipe(tmp_path, pairs=50)))
    assert [p.name for p in config.data["test"].target_files()] == ["valid.de", "valid.alt.de"]


def test_a_reference_file_of_another_length_is_a_one_line_error(tmp_path: Path) -> None:
    from s2s.data.corpus import load_parallel

    config = load_config(add_second_references(tiny_recipe(tmp_path, pairs=50)))
    write_lines(tmp_path / "valid.alt.de", ["nur eine Zeile"])
    with pytest.raises(S2SError, match=r"valid.alt.de has 1 \(line 2 of .*valid.en has no"):
        load_parallel(config.data["test"], "test")


def test_an_empty_reference_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.test.tgt: .*names no reference file"):
        load_config(tiny_recipe(tmp_path, pairs=50), ["data.test.tgt=[]"])


@pytest.fixture(scope="module")
def wer_run(tmp_path_factory) -> Path:
    """A tiny translation run that validates twice and early-stops by WER."""
    folder = tmp_path_factory.mktemp("wer")
    recipe = add_second_references(tiny_recipe(folder, pairs=200, steps=8))
    run = folder / "run"
    result = s2s(
        "train", str(recipe), "--out", str(run), "-q",
        "--set", "train.early_stopping_metric=wer", "--set", "train.valid_every=4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run


def test_a_translation_run_validates_and_keeps_its_best_by_wer(wer_run: Path) -> None:
    records = [json.loads(line) for line in (wer_run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "valid_wer" in r]
    assert [r["step"] for r in validations] == [4, 8]
    assert all("valid_bleu" in r and r["valid_wer"] >= 0 for r in validations)
    ranked = json.loads((wer_run / "checkpoints" / "best.json").read_text())
    by_wer = sorted(validations, key=lambda r: r["valid_wer"])  # lower is better
    assert [c["metric"] for c in ranked] == [r["valid_wer"] for r in by_wer]


def test_evaluate_scores_against_every_reference(wer_run: Path, tmp_path: Path) -> None:
    hyps = tmp_path / "hyps.de"
    split = s2s("evaluate", str(wer_run), "--split", "test", "--beam", "2", "--output", str(hyps))
    assert split.returncode == 0, split.stderr
    assert "nrefs:2|" in split.stdout and "refs:closest" in split.stdout
    for line in ("WER = ", "CER = ", "exact = "):
        assert line in split.stdout
    # the outputs themselves as a second reference: every output has a perfect reference
    src = wer_run.parent / "valid.en"
    ref = wer_run.parent / "valid.de"
    files = s2s(
        "evaluate", str(wer_run), "--src", str(src), "--ref", str(ref), "--ref", str(hyps),
        "--beam", "2",
    )  # fmt: skip
    assert files.returncode == 0, files.stderr
    lines = files.stdout.splitlines()
    # (BLEU needs 4-grams, which a tiny model's short outputs may lack: chrF does not)
    assert lines[2].startswith("chrF2 = 100.00") and lines[4].startswith("WER = 0.00 %")
    assert "exact = 100.00 % (40 of 40 outputs exactly right)" in files.stdout


@pytest.mark.parametrize(
    ("metric", "value"), [("chrf", 100.0), ("wer", 0.0), ("cer", 0.0), ("exact", 100.0)]
)
def test_validation_logs_the_early_stopping_metric_first_and_bleu(metric: str, value: float):
    from s2s.data.corpus import ParallelText
    from s2s.tasks.translation.task import TranslationTask

    outputs = ["ein Hund", "zwei Katzen schlafen"]
    text = ParallelText(
        ["a dog", "two cats"], ["ein Tier", "x"], [["ein Tier", outputs[0]], ["x", outputs[1]]]
    )
    scores = TranslationTask().decoded_scores(outputs, text, metric)
    assert list(scores) == [f"valid_{metric}", "valid_bleu"] and scores[f"valid_{metric}"] == value
