"""On/off environment switches (S2S_TCMALLOC, S2S_FLUSH_DENORMALS): 1, the default, or 0.

One parser, so every switch accepts the same values and refuses others with the same kind
of one-line error, naming what each value does."""

from __future__ import annotations

from collections.abc import Mapping

from s2s.errors import S2SError


def switch_on(environ: Mapping[str, str], name: str, on: str, off: str) -> bool:
    """Whether switch ``name`` is 1 (on, the default when unset) rather than 0; ``on`` and
    ``off`` say what each does, for the error any other value gets."""
    value = environ.get(name, "1")
    if value not in ("0", "1"):
        raise S2SError(f"{name}={value!r}: use 1 ({on}) or 0 ({off})")
    return value == "1"
