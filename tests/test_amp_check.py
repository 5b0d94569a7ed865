"""tools/amp_check.py trains a recipe in fp32 and under AMP and compares them; on the CPU
it runs with bf16 autocast. No timing is judged here: only that the numbers are real."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import ROOT, tiny_recipe

sys.path.insert(0, str(ROOT / "tools"))

import amp_check


def test_compares_fp32_and_bf16_training_from_the_same_start(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "data", pairs=200)
    out, work = tmp_path / "amp.json", tmp_path / "runs"
    argv = ["--recipe", str(recipe), "--device", "cpu", "--amp", "bf16", "--steps", "6"]
    argv += ["--valid-every", "3", "--threads", "1", "--work-dir", str(work), "--json", str(out)]
    assert amp_check.main(argv) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    fp32, amp = results["fp32"], results["amp"]
    assert (fp32["amp"], amp["amp"], amp["precision"]) == ("off", "bf16", "bf16")
    for run in (fp32, amp):
        assert [v["step"] for v in run["validations"]] == [3, 6]
        assert run["tokens_per_second"] > 0
    # both runs trained from the same start and data order, so their losses stay close
    first = (fp32["validations"][0]["valid_loss"], amp["validations"][0]["valid_loss"])
    assert first[0] == pytest.approx(first[1], rel=0.05)
    verdict = results["verdict"]
    speedup = amp["tokens_per_second"] / fp32["tokens_per_second"]
    assert verdict["speedup"] == pytest.approx(speedup, abs=5e-4)  # rounded to 3 places
    last = (fp32["validations"][-1]["valid_loss"], amp["validations"][-1]["valid_loss"])
    difference = abs(last[1] - last[0]) / last[0]
    assert verdict["valid_loss_relative_difference"] == pytest.approx(difference, abs=1e-5)
    assert verdict["loss_met"] == (difference <= 0.01)
    config = (work / "amp" / "config.toml").read_text(encoding="utf-8")
    assert 'amp = "bf16"' in config and "valid_decode = false" in config
    printed = capsys.readouterr().out
    assert "| 6 |" in printed and "x (" in printed


def test_auto_on_the_cpu_is_refused_before_training(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "data", pairs=200)
    argv = ["--recipe", str(recipe), "--device", "cpu", "--steps", "6", "--valid-every", "3"]
    assert amp_check.main([*argv, "--work-dir", str(tmp_path / "runs")]) == 1
    assert "--amp auto is fp32 on cpu: use --amp bf16" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
