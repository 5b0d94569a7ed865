"""Reading a run's checkpoints while training may still write them: a reader gets one whole
checkpoint, follows best.json to a newer best when training pruned the one it named, and a
damaged best.json or a run without checkpoints is one line naming what is wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2s.errors import S2SError
from s2s.run import checkpoint as checkpoint_module
from s2s.run.checkpoint import load_checkpoint, save_checkpoint
from s2s.run.directory import RunDir
from s2s.tasks.loading import load_run


def s2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args], capture_output=True, timeout=120, input=b"A dog.\n"
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("s2s: error: ") and stderr.count("\n") == 1, stderr
    return stderr


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared trained run, free to damage."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def newer_best(run: Path) -> tuple[str, dict]:
    """Save a distinguishable 'newer best' checkpoint next to the current one, as training
    would; returns its name and weights."""
    best = json.loads((run / "checkpoints" / "best.json").read_text())[0]
    payload = load_checkpoint(run / "checkpoints" / best["file"])
    payload.pop("format_version")
    payload["model"] = {name: tensor * 0.5 for name, tensor in payload["model"].items()}
    name = f"step-{best['step'] + 100}.pt"
    save_checkpoint(run / "checkpoints" / name, payload)
    return name, payload["model"]


def test_a_best_checkpoint_pruned_after_best_json_was_read_is_followed_to_the_new_best(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, weights = newer_best(run)
    original = RunDir.read_best
    raced = []

    def read_best_then_train_on(self: RunDir) -> list[dict]:
        entries = original(self)
        if not raced:  # training validates once more, right after the reader read the index
            raced.append(entries[0]["file"])
            self.write_best([{"file": name, "step": 999, "metric": 99.0}])
            (self.checkpoints / entries[0]["file"]).unlink()
        return entries

    monkeypatch.setattr(RunDir, "read_best", read_best_then_train_on)
    _, _, model, _ = load_run(run, None, "cpu", "off")
    assert raced, "the race was not simulated"
    assert torch.equal(model.state_dict()["bridge.weight"], weights["bridge.weight"])


def test_a_checkpoint_deleted_once_opened_is_still_read_whole(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = run / "checkpoints" / "last.pt"
    expected = load_checkpoint(path)["model"]["bridge.weight"]
    check = checkpoint_module._check_archive

    def check_then_prune(*args):
        check(*args)
        path.unlink()  # training prunes the file between the archive check and the load

    monkeypatch.setattr(checkpoint_module, "_check_archive", check_then_prune)
    assert torch.equal(load_checkpoint(path)["model"]["bridge.weight"], expected)


def test_a_run_without_checkpoints_says_so(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    stderr = one_line_error(s2s("translate", str(run)))
    assert f"{run}: no checkpoint yet (training has not saved one)" in stderr


def test_best_json_naming_a_deleted_checkpoint_names_both(run: Path) -> None:
    best = json.loads((run / "checkpoints" / "best.json").read_text())[0]["file"]
    (run / "checkpoints" / best).unlink()
    with pytest.raises(S2SError, match=rf"{best}: checkpoint not found \(named in .*best\.json\)"):
        load_run(run, None, "cpu")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[{", "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
        ("", "not valid JSON (Expecting value at line 1, column 1)"),
        ("{}", "expected a list of checkpoints, found dict"),
        ("[1]", "entry 1 is not an object: 1"),
        ('[{"file": "../../x.pt", "step": 1, "metric": 1.0}]', "entry 1: 'file' must name"),
        ('[{"file": "step-1.pt", "step": "1", "metric": 1.0}]', "entry 1: 'step' must be"),
        ('[{"file": "step-1.pt", "step": 1}]', "entry 1: 'metric' must be a number"),
    ],
)
def test_a_damaged_best_json_is_one_line_naming_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    run = RunDir(tmp_path)
    run.checkpoints.mkdir()
    run.best_index.write_text(content)
    with pytest.raises(S2SError) as raised:
        run.read_best()
    assert str(raised.value).startswith(f"{run.best_index}: {problem}")
    assert "--checkpoint" in str(raised.value)


@pytest.mark.parametrize(
    "command",
    [("translate",), ("evaluate", "--split", "valid"), ("info",)],
    ids=lambda command: command[0],
)
def test_commands_on_a_corrupt_best_json(run: Path, command: tuple[str, ...]) -> None:
    best = run / "checkpoints" / "best.json"
    best.write_text('[{"file": "step-12.pt", "st')
    stderr = one_line_error(s2s(command[0], str(run), *command[1:]))
    assert f"{best}: not valid JSON (" in stderr


def test_translate_on_a_best_json_of_the_wrong_shape(run: Path) -> None:
    best = run / "checkpoints" / "best.json"
    best.write_text("{}")
    stderr = one_line_error(s2s("translate", str(run)))
    assert f"{best}: expected a list of checkpoints, found dict" in stderr


def test_average_does_not_need_best_json(run: Path) -> None:
    (run / "checkpoints" / "best.json").write_text("[1]")
    result = s2s("average", str(run), "--last", "1", "--no-validate", "--device", "cpu")
    assert result.returncode == 0, result.stderr.decode()
    assert (run / "checkpoints" / "averaged-last-1.pt").is_file()
    # and the averaged checkpoint it suggests works without best.json
    averaged = run / "checkpoints" / "averaged-last-1.pt"
    result = s2s("translate", str(run), "--checkpoint", str(averaged), "--device", "cpu")
    assert result.returncode == 0 and result.stdout.count(b"\n") == 1, result.stderr.decode()
