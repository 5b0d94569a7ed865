"""Finding cells (entry-point metadata), loading them (errors name the distribution),
and building them (options checked against what the cell declares).

Finding never imports a plugin, so a broken plugin only fails when it is the one asked
for, or when `s2s cells` lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, NamedTuple

from s2s.cells import RecurrentCell
from s2s.core.recurrent_stack import CellFactory
from s2s.errors import ConfigError, S2SError

if TYPE_CHECKING:
    from s2s.config import ModelConfig

ENTRY_POINT_GROUP = "s2s.cells"


@dataclass(frozen=True)
class CellEntry:
    """One registered cell: its name, where it points, and who registered it."""

    name: str
    target: str
    distribution: str
    version: str
    entry_point: EntryPoint


@dataclass(frozen=True)
class CellRow:
    """One line of `s2s cells`: a loaded cell's description, or why it cannot be used."""

    name: str
    target: str
    origin: str  # "distribution version", or several names joined by " and "
    fused: str  # "yes", "no" or "?" when the cell did not load
    options: str  # "key=default, ..." or "-"
    error: str | None = None


def discover_cells() -> tuple[dict[str, CellEntry], dict[str, list[CellEntry]]]:
    """All registered cells by name, sorted; plus names claimed by several distributions
    (sorted by distribution, so messages do not depend on the order of sys.path)."""
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
    conflicts = {
        name: sorted(entries, key=lambda e: (e.distribution, e.target))
        for name, entries in sorted(found.items())
        if len(entries) > 1
    }
    return unique, conflicts


def conflict_message(name: str, entries: list[CellEntry]) -> str:
    who = " and ".join(f"{e.distribution} {e.version} ({e.target})" for e in entries)
    return f"cell {name!r} is registered by both {who}; uninstall one of them"


def load_entry(entry: CellEntry) -> type[RecurrentCell]:
    """Import one registered cell; any failure becomes an error naming its distribution."""
    try:
        cls = entry.entry_point.load()
    except Exception as error:  # a broken plugin must not look like an s2s bug
        raise S2SError(
            f"cell {entry.name!r} from {entry.distribution} {entry.version} failed to load: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, RecurrentCell)):
        raise S2SError(
            f"cell {entry.name!r} from {entry.distribution} {entry.version} "
            f"({entry.target}) is not a s2s.cells.RecurrentCell subclass"
        )
    return cls


def unknown_cell_message(name: str, key: str = "model.cell") -> str:
    """`KEY: unknown cell ...`, listing the cells that are installed."""
    cells, conflicts = discover_cells()
    known = ", ".join(sorted([*cells, *conflicts])) or "none"
    return f"{key}: unknown cell {name!r} (installed: {known})"


def find_cell(name: str, key: str = "model.cell") -> CellEntry | None:
    """The one registration of ``name``; None when nobody registers it, an error naming
    the config ``key`` that asked for it when several distributions do."""
    cells, conflicts = discover_cells()
    if name in conflicts:
        raise ConfigError(f"{key}: {conflict_message(name, conflicts[name])}")
    return cells.get(name)


def load_cell_class(name: str, key: str = "model.cell") -> type[RecurrentCell]:
    """The cell class registered under ``name``; a one-line error naming the config
    ``key`` that asked for it if that is not possible."""
    entry = find_cell(name, key)
    if entry is None:
        raise ConfigError(unknown_cell_message(name, key))
    return load_entry(entry)


def resolved_options(cls: type[RecurrentCell], options: dict[str, Any]) -> dict[str, Any]:
    """The options a cell is built with: its declared defaults, overridden by ``options``.
    A None default means "not set" and is left out (TOML cannot hold it)."""
    merged = {**cls.options, **options}
    return {key: value for key, value in merged.items() if value is not None}


def _type_mismatch(value: Any, default: Any) -> bool:
    """Whether ``value`` cannot stand in for an option whose default is ``default``."""
    if default is None:
        return False
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is not type(default)
    if isinstance(default, float):
        return not isinstance(value, int | float)
    return not isinstance(value, type(default))


def check_cell_options(
    name: str,
    cls: type[RecurrentCell],
    options: dict[str, Any],
    key: str = "model.cell_options",
) -> None:
    """Reject options the cell does not declare, or of another type than their default;
    errors name the config ``key`` the options came from."""
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        known = ", ".join(sorted(cls.options)) or "none"
        raise ConfigError(f"{key}.{unknown[0]}: unknown option for cell {name!r} (known: {known})")
    for option, value in options.items():
        default = cls.options[option]
        if _type_mismatch(value, default):
            raise ConfigError(
                f"{key}.{option}: cell {name!r} expects {type(default).__name__} "
                f"(default {default!r}), got {value!r}"
            )


def cell_factory(
    name: str,
    options: dict[str, Any],
    name_key: str = "model.cell",
    options_key: str = "model.cell_options",
) -> CellFactory:
    """A function (input_size, hidden_size) -> cell, after checking name and options once.

    A cell that rejects its options (a ValueError or TypeError from its constructor, say
    ``proj_size`` not below ``hidden_size``) gives a one-line error naming the cell. The
    keys are the config keys that chose the cell and its options, for those errors.
    """
    cls = load_cell_class(name, name_key)
    check_cell_options(name, cls, options, options_key)

    def build(input_size: int, hidden_size: int) -> RecurrentCell:
        try:
            return cls(input_size, hidden_size, **options)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"{options_key}: cell {name!r} (input_size={input_size}, "
                f"hidden_size={hidden_size}) rejected its options: {error}"
            ) from None

    return build


class SideCells(NamedTuple):
    """The cell factories of a model's two sides (the same cell unless a side names its own)."""

    encoder: CellFactory
    decoder: CellFactory


def side_cells(model: ModelConfig) -> SideCells:
    """Each side's checked cell factory, from ``model.{encoder,decoder}_cell`` or the
    ``model.cell`` shorthand: a bad name or option on either side is an error now."""
    return SideCells(*(cell_factory(*model.side_cell(side)) for side in ("encoder", "decoder")))


def _describe_options(cls: type[RecurrentCell]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in cls.options.items()) or "-"


def describe_cells() -> list[CellRow]:
    """Every registered cell for `s2s cells`, sorted by name; broken ones carry an error."""
    found, conflicts = discover_cells()
    rows = []
    for entry in found.values():
        origin = f"{entry.distribution} {entry.version}"
        try:
            cls = load_entry(entry)
        except S2SError as error:  # report it, keep listing the others
            rows.append(CellRow(entry.name, entry.target, origin, "?", "-", str(error)))
            continue
        fused = "yes" if cls.has_fused_forward else "no"
        rows.append(CellRow(entry.name, entry.target, origin, fused, _describe_options(cls)))
    for name, entries in conflicts.items():
        origin = " and ".join(f"{e.distribution} {e.version}" for e in entries)
        targets = " | ".join(e.target for e in entries)
        rows.append(CellRow(name, targets, origin, "?", "-", conflict_message(name, entries)))
    return sorted(rows, key=lambda row: row.name)


def cells_table(rows: list[CellRow]) -> list[str]:
    """The lines of `s2s cells`: aligned columns, options (or the error) last."""
    header = ("name", "class", "distribution", "fused", "options")
    table = [header] + [
        (r.name, r.target, r.origin, r.fused, f"error: {r.error}" if r.error else r.options)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in table
    ]
