"""s2s: sequence-to-sequence models built from pluggable recurrent cells."""

__version__ = "0.1.0"
