"""Finding cells (entry-point metadata), loading them (errors name the distribution),
and building them (options checked against what the cell declares)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from s2s.cells import RecurrentCell
from s2s.errors import ConfigError, S2SError

ENTRY_POINT_GROUP = "s2s.cells"


@dataclass(frozen=True)
class CellEntry:
    """One registered cell: its name, where it points, and who registered it."""

    name: str
    target: str
    distribution: str
    version: str
    entry_point: EntryPoint


def discover_cells() -> tuple[dict[str, CellEntry], dict[str, list[CellEntry]]]:
    """All registered cells by name, sorted; plus names claimed by several distributions."""
    found: dict[str, list[CellEntry]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        entry = CellEntry(
            name=ep.name,
            target=ep.value,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            entry_point=ep,
        )
        same = found.setdefault(ep.name, [])
        # An editable install can expose one distribution twice: count it once.
        if not any((e.distribution, e.target) == (entry.distribution, entry.target) for e in same):
            same.append(entry)
    unique = {name: entries[0] for name, entries in sorted(found.items()) if len(entries) == 1}
    conflicts = {name: entries for name, entries in sorted(found.items()) if len(entries) > 1}
    return unique, conflicts


def load_cell_class(name: str) -> type[RecurrentCell]:
    """The cell class registered under ``name``; a one-line error if that is not possible."""
    cells, conflicts = discover_cells()
    if name in conflicts:
        who = " and ".join(f"{e.distribution} ({e.target})" for e in conflicts[name])
        raise ConfigError(f"model.cell: {name!r} is registered by both {who}")
    if name not in cells:
        known = ", ".join(sorted([*cells, *conflicts])) or "none"
        raise ConfigError(f"model.cell: unknown cell {name!r} (installed: {known})")
    entry = cells[name]
    try:
        cls = entry.entry_point.load()
    except Exception as error:  # a broken plugin must not look like an s2s bug
        raise S2SError(
            f"cell {name!r} from {entry.distribution} {entry.version} failed to load: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, RecurrentCell)):
        raise S2SError(
            f"cell {name!r} from {entry.distribution} is not a s2s.cells.RecurrentCell subclass"
        )
    return cls


def check_cell_options(name: str, cls: type[RecurrentCell], options: dict[str, Any]) -> None:
    """Reject options the cell does not declare, naming the known ones."""
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        known = ", ".join(sorted(cls.options)) or "none"
        raise ConfigError(
            f"model.cell_options.{unknown[0]}: unknown option for cell {name!r} (known: {known})"
        )


def cell_factory(name: str, options: dict[str, Any]):
    """A function (input_size, hidden_size) -> cell, after checking name and options once."""
    cls = load_cell_class(name)
    check_cell_options(name, cls, options)

    def build(input_size: int, hidden_size: int) -> RecurrentCell:
        return cls(input_size, hidden_size, **options)

    return build
