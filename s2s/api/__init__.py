"""The Python API: `load` a trained run and call the methods its task offers
(docs/python-api.md). The command line's decoding commands and `s2s serve` use it."""

from s2s.api.model import Model, load

__all__ = ["Model", "load"]
