"""`--set decode.key=value` on a trained run: decoding settings change, nothing else may."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import read_saved_config, with_decode_overrides
from s2s.errors import ConfigError
from s2s.tasks.loading import load_run


def test_decode_keys_change_and_the_rest_stays(trained_run: Path) -> None:
    saved = read_saved_config(trained_run / "config.toml")
    changed = with_decode_overrides(saved, ["decode.stopping=early", "decode.length_penalty=0.6"])
    assert (changed.decode.stopping, changed.decode.length_penalty) == ("early", 0.6)
    assert changed.decode.beam_size == saved.decode.beam_size
    assert changed.model == saved.model and changed.data == saved.data
    assert (saved.decode.stopping, saved.decode.length_penalty) == ("exact", 1.0)  # kept


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden_size=8", "--set 'model.hidden_size=8': only decode.* keys can change"),
        ("decode.beam=3", "--set: decode.beam: unknown key"),
        ("decode.stopping=never", "--set: decode.stopping: Input should be 'exact' or 'early'"),
        ("decode.length_penalty=-1", "--set: decode.length_penalty: Input should be greater"),
        ("decode", "--set 'decode': expected section.key=value"),
        # checks across sections still hold: joint CTC decoding needs a CTC head
        ("decode.ctc_weight=0.5", "--set: (top level): decode.ctc_weight > 0 needs a CTC head"),
    ],
)
def test_a_bad_decode_override_is_a_one_line_error(
    override: str, message: str, trained_run: Path
) -> None:
    saved = read_saved_config(trained_run / "config.toml")
    with pytest.raises(ConfigError) as caught:
        with_decode_overrides(saved, [override])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_load_run_decodes_with_the_overrides(trained_run: Path) -> None:
    config, *_ = load_run(trained_run, device="cpu", decode_overrides=["decode.stopping=early"])
    assert config.decode.stopping == "early"
    assert load_run(trained_run, device="cpu")[0].decode.stopping == "exact"


def test_translate_and_evaluate_take_decode_settings(trained_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    settings = ["--set", "decode.stopping=early", "--set", "decode.length_penalty=0"]
    translated = runner.invoke(app, ["translate", str(trained_run), *settings], input="A.\nB.\n")
    assert translated.exit_code == 0, translated.output
    assert len(translated.stdout.splitlines()) == 2

    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("Ein Hund.\n", encoding="utf-8")
    ref.write_text("A dog.\n", encoding="utf-8")
    files = ["--src", str(src), "--ref", str(ref), "--beam", "2"]
    evaluated = runner.invoke(app, ["evaluate", str(trained_run), *files, *settings])
    assert evaluated.exit_code == 0, evaluated.output
    records = (trained_run / "evaluations.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(records[-1])
    assert record["split"] == str(src)
    assert record["set"] == ["decode.stopping=early", "decode.length_penalty=0"]
    assert record["precision"] == "fp32"
    card = runner.invoke(app, ["info", str(trained_run)])
    assert "decode.stopping=early" in card.stdout
    in_bf16 = runner.invoke(app, ["evaluate", str(trained_run), *files, "--amp", "bf16"])
    assert in_bf16.exit_code == 0, in_bf16.output
    records = (trained_run / "evaluations.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(records[-1])["precision"] == "bf16"
    card = runner.invoke(app, ["info", str(trained_run)])
    assert "(beam 2, bf16, " in card.stdout  # scores say what precision they came from


@pytest.mark.parametrize("command", ["translate", "evaluate", "align"])
def test_decoding_commands_refuse_a_model_key(command: str, trained_run: Path) -> None:
    args = [command, str(trained_run), *(["A dog."] if command == "align" else [])]
    result = CliRunner().invoke(app, [*args, "--set", "model.hidden_size=8"], input="A.\n")
    assert result.exit_code == 2
    assert "only decode.* keys can change after training" in result.output


def test_align_takes_decode_settings(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "align.png"
    args = ["align", str(trained_run), "A dog.", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--set", "decode.stopping=early"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
