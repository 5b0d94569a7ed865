"""The Python API (`s2s.load`): any task's run through its task, lists in and lists out
in order, the same outputs as the decoding commands, and its docstring examples run as
doctests against tiny real runs."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_overrides

import s2s
import s2s.api.model
from s2s.errors import S2SError
from s2s.run.directory import RunDir
from s2s.tasks.language_model.scoring import score_rows
from s2s.tasks.recipe import load_config
from s2s.tasks.registry import find_task

ROOT = Path(__file__).resolve().parent.parent
LINES = ["A man is riding a bicycle.", "", "Two dogs play in the snow.", "   ", "A girl."]


def s2s_command(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args], input=stdin, capture_output=True, timeout=300
    )


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A language model trained for a few steps on a WikiText-2 slice."""
    folder = tmp_path_factory.mktemp("lm")
    config = load_config(ROOT / "recipes" / "lm.toml", tiny_overrides(folder / "data"))
    run = RunDir(folder / "run")
    find_task(config.task.type).make_trainer(config, run, quiet=True).train()
    return run.path


def test_import_s2s_does_not_import_torch() -> None:
    code = "import sys, s2s; assert callable(s2s.load); print('torch' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "False"


def test_the_docstring_examples_run(trained_run: Path) -> None:
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(s2s.api.model, globs={"run_dir": trained_run})
    examples = 0
    for test in sorted(tests, key=lambda t: t.name):
        if test.name.endswith((".Model.translate", ".Model.continuous_translation")):
            test.globs["model"] = s2s.load(trained_run, device="cpu")
        runner.run(test)
        examples += len(test.examples)
    assert examples >= 8
    assert runner.summarize(verbose=False).failed == 0


def test_translate_equals_the_command_line_in_order(trained_run: Path) -> None:
    model = s2s.load(trained_run, device="cpu", threads=1)
    outputs = model.translate(LINES, beam=2)
    stdin = "".join(line + "\n" for line in LINES).encode()
    found = s2s_command("translate", str(trained_run), "--beam", "2", "-q", stdin=stdin)
    assert found.returncode == 0, found.stderr.decode()
    assert outputs == found.stdout.decode().split("\n")[:-1]
    assert outputs[1] == outputs[3] == ""
    assert [model.translate([line], beam=2)[0] for line in LINES] == outputs


def test_invalid_utf8_is_replaced_as_translate_replaces_it(
    trained_run: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model = s2s.load(trained_run, device="cpu")
    broken = b"A man \xff\xfe rides."
    found = s2s_command("translate", str(trained_run), "-q", stdin=broken + b"\n")
    assert model.translate([broken]) == found.stdout.decode().splitlines()
    assert model.translate(["A man \udcff rides."]) == model.translate([broken])
    assert "input line 1: invalid UTF-8 replaced" in capfd.readouterr().err


def test_nbest_gives_a_list_per_input_and_needs_the_beam(trained_run: Path) -> None:
    model = s2s.load(trained_run, device="cpu")
    found = model.translate(["A dog.", ""], beam=3, nbest=3)
    assert [len(hyps) for hyps in found] == [3, 1]
    assert found[1] == [""]
    with pytest.raises(S2SError, match="--nbest 4 needs a beam of at least 4"):
        model.translate(["A dog."], beam=3, nbest=4)
    with pytest.raises(S2SError, match="translate takes a list of inputs, not one str"):
        model.translate("A dog.")


def test_decode_keys_checkpoint_and_precision_reach_the_search(trained_run: Path) -> None:
    checkpoint = RunDir(trained_run).default_checkpoint()
    model = s2s.load(
        trained_run,
        device="cpu",
        checkpoint=checkpoint,
        amp="int8",
        decode={"length_penalty": 0.6, "stopping": "early", "batch_tokens": 100},
    )
    decode = model.config.decode
    assert (decode.length_penalty, decode.stopping, decode.batch_tokens) == (0.6, "early", 100)
    assert decode.amp == "int8"
    assert len(model.translate(LINES)) == len(LINES)
    with pytest.raises(S2SError, match="only decode"):
        s2s.load(trained_run, decode=["train.lr=1"])
    with pytest.raises(S2SError, match="amp 'fp8'"):
        s2s.load(trained_run, amp="fp8")


def test_a_method_the_task_lacks_names_the_ones_it_has(trained_run: Path, lm_run: Path) -> None:
    mt = s2s.load(trained_run, device="cpu")
    with pytest.raises(S2SError, match="a translation run offers translate, not score"):
        mt.score(["a line"])
    lm = s2s.load(lm_run, device="cpu")
    assert lm.methods == ("generate", "score")
    with pytest.raises(S2SError, match="a language_model run offers generate and score, not"):
        lm.translate(["a line"])
    with pytest.raises(S2SError, match="transcribe"):
        lm.transcribe(["a.wav"])


def test_language_model_generates_and_scores_as_the_commands_do(lm_run: Path) -> None:
    lm = s2s.load(lm_run, device="cpu")
    one = lm.generate("the company", max_tokens=8, seed=3)
    assert isinstance(one, str) and one.startswith("the company")
    both = lm.generate(["the company", "in 1990"], max_tokens=8, seed=3)
    assert both[0] == one and both[1].startswith("in 1990")
    found = s2s_command(
        "generate", str(lm_run), "--prompt", "the company", "--max-tokens", "8", "--seed", "3"
    )
    assert found.stdout.decode() == one + "\n"
    searched = lm.generate("the company", max_tokens=8, beam=3)
    assert searched == lm.generate("the company", max_tokens=8, beam=3, seed=9)  # no sampling
    lines = ["the game was played", "", "he said"]
    scores = lm.score(lines)
    assert [s.tokens for s in scores][1] == 1  # an empty line still ends
    stdin = "".join(line + "\n" for line in lines).encode()
    found = s2s_command("score", str(lm_run), stdin=stdin)
    assert found.stdout.decode().splitlines() == score_rows(scores)
