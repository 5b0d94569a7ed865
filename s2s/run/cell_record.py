"""Which cell made a run: its distribution, version and resolved options, noted in the
run's ``about.json`` by each training session and checked whenever the run is loaded, so
that a missing plugin is named and a different version of it does not go unnoticed."""

from __future__ import annotations

import logging
from typing import Any

from s2s.config import CellChoice, Config, ModelConfig
from s2s.core.cell_registry import (
    find_cell,
    load_cell_class,
    load_entry,
    resolved_options,
    unknown_cell_message,
)
from s2s.errors import ConfigError
from s2s.run.about import read_about, write_about
from s2s.run.directory import RunDir

log = logging.getLogger("s2s.run")
# (cell, trained with, installed) already warned about: a process warns once per run kind
_warned: set[tuple[str, str, str]] = set()
SIDES = ("encoder", "decoder")


def cell_record(name: str, options: dict[str, Any], key: str = "model.cell") -> dict[str, Any]:
    """The installed cell ``name`` as a run records it: who provides it, which version,
    and every option it is built with (its defaults included)."""
    entry = find_cell(name, key)
    if entry is None:
        raise ConfigError(unknown_cell_message(name, key))
    cls = load_entry(entry)
    return {
        "name": name,
        "distribution": entry.distribution,
        "version": entry.version,
        "options": resolved_options(cls, options),
    }


def own_side_cells(model: ModelConfig) -> dict[str, CellChoice]:
    """The sides that name their own cell or options (``model.encoder_cell`` ...), by side."""
    choices = {side: model.side_cell(side) for side in SIDES}
    return {
        side: choice
        for side, choice in choices.items()
        if (choice.name_key, choice.options_key) != ("model.cell", "model.cell_options")
    }


def resolve_cell_options(model: ModelConfig) -> None:
    """Write each cell's defaults into the model's options (the shorthand's and each side's
    own), so the saved config keeps building the same cells when a plugin update changes a
    default, and a config naming only the options it gave compares equal to one naming all."""
    for choice in own_side_cells(model).values():
        cell = load_cell_class(choice.name, choice.name_key)
        setattr(
            model, choice.options_key.removeprefix("model."), resolved_options(cell, choice.options)
        )
    model.cell_options = resolved_options(load_cell_class(model.cell), model.cell_options)


def record_cell(run: RunDir, config: Config) -> None:
    """Note the cells in the latest session of ``about.json`` (`record_session` wrote it):
    the ``model.cell`` shorthand's, and each side's own where a side names one."""
    model = config.model
    about = read_about(run)
    sessions = about.get("sessions") or [{}]
    sessions[-1]["cell"] = cell_record(model.cell, model.cell_options)
    sides = own_side_cells(model)
    if sides:
        sessions[-1]["side_cells"] = {
            side: cell_record(choice.name, choice.options, choice.name_key)
            for side, choice in sides.items()
        }
    write_about(run, {**about, "sessions": sessions})


def recorded_cell(about: dict[str, Any]) -> dict[str, Any] | None:
    """The cell the latest session that noted one trained with; None for older runs."""
    for session in reversed(about.get("sessions", [])):
        if isinstance(session, dict) and isinstance(session.get("cell"), dict):
            return session["cell"]
    return None


def recorded_cells(about: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell the latest session that noted its cells trained with: the shorthand's,
    then each side's own; empty for older runs."""
    for session in reversed(about.get("sessions", [])):
        if isinstance(session, dict) and isinstance(session.get("cell"), dict):
            sides = session.get("side_cells")
            own = (
                [c for c in sides.values() if isinstance(c, dict)]
                if isinstance(sides, dict)
                else []
            )
            return [session["cell"], *own]
    return []


def check_recorded_cell(run: RunDir, config: Config) -> None:
    """Before a run's model is built: name the distribution to install when one of its
    cells is missing, and warn once when another version of it is installed than trained
    it. Runs trained before cells were recorded are not checked."""
    used = {config.model.cell, *(config.model.side_cell(side).name for side in SIDES)}
    for recorded in recorded_cells(read_about(run)):
        if recorded.get("name") in used:
            _check_one(run, recorded)


def _check_one(run: RunDir, recorded: dict[str, Any]) -> None:
    name = recorded["name"]
    trained = f"{recorded.get('distribution', '?')} {recorded.get('version', '?')}"
    entry = find_cell(name)
    if entry is None:
        raise ConfigError(
            f"{unknown_cell_message(name)}; this run was trained with it from {trained}: install it"
        )
    installed = f"{entry.distribution} {entry.version}"
    if installed != trained and (name, trained, installed) not in _warned:
        _warned.add((name, trained, installed))
        log.warning(
            "%s: cell %r was trained with %s, %s is installed; results may differ",
            run.path,
            name,
            trained,
            installed,
        )
