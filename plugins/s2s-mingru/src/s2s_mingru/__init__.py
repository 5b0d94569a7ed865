"""minGRU for s2s: a GRU whose gates read only the input, so sequences run as a parallel scan."""

from s2s_mingru.cell import MinGRUCell

__all__ = ["MinGRUCell"]
__version__ = "0.1.0"
