"""Checkpoints are untrusted input: corrupt, truncated or pickled-code files are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from s2s.checkpoint import load_checkpoint, save_checkpoint
from s2s.errors import S2SError
from s2s.run_dir import load_run


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "note": "x"})
    payload = load_checkpoint(path)
    assert payload["note"] == "x" and torch.equal(payload["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_truncated_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(S2SError, match="corrupt or truncated checkpoint"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_code_is_refused_without_running_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": Exploit()}, path, pickle_protocol=2)
    with pytest.raises(S2SError, match="refused to load"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(S2SError):
        load_checkpoint(plain)
    assert not (tmp_path / "pwned").exists()


def test_foreign_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"format_version": 99}, path)
    with pytest.raises(S2SError, match="checkpoint format 99 is not supported"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_refused(trained_run: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    payload["model"]["bridge.weight"] = torch.zeros(3, 3)
    payload.pop("format_version")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, payload)
    with pytest.raises(S2SError, match=r"bridge.weight has shape \(3, 3\)"):
        load_run(trained_run, bad, "cpu")
