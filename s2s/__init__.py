"""s2s: sequence-to-sequence models built from pluggable recurrent cells.

``s2s.load(run_dir)`` (the Python API, `s2s.api`) is imported on first use, so ``import
s2s`` stays light: no torch until a run is loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "load"]

if TYPE_CHECKING:
    from s2s.api import Model, load


def __getattr__(name: str) -> Any:
    """The public API, re-exported lazily from `s2s.api` (PEP 562)."""
    if name in ("load", "Model"):
        import s2s.api

        return getattr(s2s.api, name)
    raise AttributeError(f"module 's2s' has no attribute {name!r}")
