"""Runs record which cell made them (distribution, version, resolved options), show it in
`s2s info`, name the plugin to install when it is missing, and warn once when another
version of it is installed than trained the run."""

from __future__ import annotations

import json
import logging
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import add_distribution, make_trainer
from test_visual import invoke

from s2s.config import read_saved_config
from s2s.errors import S2SError
from s2s.inspect.model_card import format_card, model_card
from s2s.run import cell_record
from s2s.run.checkpoint import load_checkpoint
from s2s.run.resume import check_resumable
from s2s.tasks.loading import load_run

WIDE_GRU = """
from s2s_cells.gru import GRUCell


class WideGRU(GRUCell):
    options = {"width": 1, "gain": 0.5}

    def __init__(self, input_size, hidden_size, width=1, gain=0.5):
        super().__init__(input_size, hidden_size)
"""


def install_plugin(folder: Path, version: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution 's2s-widegru' of ``version`` that registers the cell 'widegru'."""
    add_distribution(
        folder,
        "s2s-widegru",
        {"widegru": "s2s_test_widegru:WideGRU"},
        {"s2s_test_widegru": WIDE_GRU},
    )
    metadata = next(folder.glob("*.dist-info")) / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 1.0", f"Version: {version}"))
    monkeypatch.syspath_prepend(str(folder))
    return folder


def uninstall(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(folder)])


@pytest.fixture
def plugin_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A run trained with cell 'widegru' from s2s-widegru 0.1.0, given only width=2."""
    plugin = install_plugin(tmp_path / "v1", "0.1.0", monkeypatch)
    monkeypatch.setattr(cell_record, "_warned", set())
    trainer = make_trainer(
        tmp_path / "work",
        "model.cell=widegru",
        "model.cell_options={width=2}",
        "train.max_steps=2",
        "train.valid_every=2",
    )
    trainer.train()
    return trainer.run.path, plugin


def test_the_run_records_the_cells_distribution_version_and_every_option(plugin_run) -> None:
    run, _ = plugin_run
    recorded = {
        "name": "widegru",
        "distribution": "s2s-widegru",
        "version": "0.1.0",
        "options": {"width": 2, "gain": 0.5},
    }
    about = json.loads((run / "about.json").read_text())
    assert about["sessions"][-1]["cell"] == recorded
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["model"]["cell_options"] == {"width": 2, "gain": 0.5}  # defaults included
    assert read_saved_config(run / "config.toml").model.cell_options == {"width": 2, "gain": 0.5}
    assert model_card(run)["cell"] == recorded
    result = invoke("info", str(run), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cell"] == recorded
    cell_row = next(
        line for line in format_card(model_card(run)).splitlines() if line.startswith("cell ")
    )
    assert cell_row.split(None, 1)[1] == "widegru (width=2, gain=0.5) from s2s-widegru 0.1.0"


def test_a_missing_plugin_names_the_distribution_that_trained_the_run(
    plugin_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, plugin = plugin_run
    uninstall(plugin, monkeypatch)
    hint = "; this run was trained with it from s2s-widegru 0.1.0: install it"
    for args, stdin in (
        (("translate", str(run)), "a dog\n"),
        (("evaluate", str(run), "--split", "test"), None),
        (("info", str(run)), None),
    ):
        result = invoke(*args, input=stdin)
        assert result.exit_code == 2, (args, result.output)
        message = result.stderr.strip()
        assert message.startswith("s2s: error: model.cell: unknown cell 'widegru' (installed: ")
        assert message.endswith(hint) and "\n" not in message


def test_another_version_of_the_plugin_warns_once(
    plugin_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    run, plugin = plugin_run
    uninstall(plugin, monkeypatch)
    install_plugin(tmp_path / "v2", "0.2.0", monkeypatch)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        load_run(run, device="cpu")
        load_run(run, device="cpu")
        model_card(run)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{run}: cell 'widegru' was trained with s2s-widegru 0.1.0, "
        "s2s-widegru 0.2.0 is installed; results may differ"
    ]


def test_the_same_version_loads_without_a_warning(plugin_run, caplog) -> None:
    run, _ = plugin_run
    with caplog.at_level(logging.WARNING, logger="s2s"):
        load_run(run, device="cpu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_checkpoint_saved_with_only_the_given_options_still_resumes(tmp_path: Path) -> None:
    """Runs from before saved only the options the recipe gave; the cell's defaults fill
    the rest when a recipe resumes them, and a changed option is still refused."""
    trainer = make_trainer(tmp_path, "train.max_steps=1", "train.valid_every=1")
    trainer.train()
    path = trainer.run.last_checkpoint
    payload = load_checkpoint(path)
    saved = tomllib.loads(payload["config"])
    assert saved["model"]["cell_options"] == {"proj_size": 0}  # an unset forget_bias: none
    payload["config"] = payload["config"].replace("proj_size = 0\n", "")
    check_resumable(payload, trainer.config, path)
    changed = make_trainer(tmp_path / "other", "model.cell_options={forget_bias=2.0}").config
    with pytest.raises(S2SError, match=r"changes the saved model \(model.cell_options.forget_bias"):
        check_resumable(payload, changed, path)
