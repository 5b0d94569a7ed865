"""Which cell made a run: its distribution, version and resolved options, noted in the
run's ``about.json`` by each training session and checked whenever the run is loaded, so
that a missing plugin is named and a different version of it does not go unnoticed."""

from __future__ import annotations

import logging
from typing import Any

from s2s.config import Config
from s2s.core.cell_registry import find_cell, load_entry, resolved_options, unknown_cell_message
from s2s.errors import ConfigError
from s2s.run.about import read_about, write_about
from s2s.run.directory import RunDir

log = logging.getLogger("s2s.run")
# (cell, trained with, installed) already warned about: a process warns once per run kind
_warned: set[tuple[str, str, str]] = set()


def cell_record(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The installed cell ``name`` as a run records it: who provides it, which version,
    and every option it is built with (its defaults included)."""
    entry = find_cell(name)
    if entry is None:
        raise ConfigError(unknown_cell_message(name))
    cls = load_entry(entry)
    return {
        "name": name,
        "distribution": entry.distribution,
        "version": entry.version,
        "options": resolved_options(cls, options),
    }


def resolve_cell_options(config: Config) -> None:
    """Write the cell's defaults into ``config.model.cell_options``, so the saved config
    keeps building the same cell when a plugin update changes a default."""
    record = cell_record(config.model.cell, config.model.cell_options)
    config.model.cell_options = record["options"]


def record_cell(run: RunDir, config: Config) -> None:
    """Note the cell in the latest session of ``about.json`` (`record_session` wrote it)."""
    about = read_about(run)
    sessions = about.get("sessions") or [{}]
    sessions[-1]["cell"] = cell_record(config.model.cell, config.model.cell_options)
    write_about(run, {**about, "sessions": sessions})


def recorded_cell(about: dict[str, Any]) -> dict[str, Any] | None:
    """The cell the latest session that noted one trained with; None for older runs."""
    for session in reversed(about.get("sessions", [])):
        if isinstance(session, dict) and isinstance(session.get("cell"), dict):
            return session["cell"]
    return None


def check_recorded_cell(run: RunDir, name: str) -> None:
    """Before a run's model is built: name the distribution to install when its cell is
    missing, and warn once when another version of it is installed than trained it."""
    recorded = recorded_cell(read_about(run))
    if recorded is None or recorded.get("name") != name:
        return  # trained before runs recorded their cell
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
