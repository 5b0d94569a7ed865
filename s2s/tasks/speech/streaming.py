"""`s2s transcribe`'s loop over paths, apart from torch: files are read and decoded in
chunks, one line written per path in order, shared by a run's recogniser and an exported
one (s2s.exported.recognizer)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from s2s.errors import S2SError

TRANSCRIBE_CHUNK = 32  # files read, decoded and printed together

Features = TypeVar("Features")


def stream_transcripts(
    read: Callable[[Path], Features],
    transcribe: Callable[[Sequence[Features]], list[str]],
    paths: Iterable[str],
    out: TextIO,
) -> int:
    """Write one transcript line per path, in order (a blank path gives an empty line):
    ``read`` gives a file's features, ``transcribe`` a chunk's transcripts.

    A file that is missing or unreadable stops the run with an error naming it, after the
    transcripts of every file before it are written. Returns the number of lines written."""
    written = 0
    pending: list[Features | None] = []  # None: a blank line

    def flush() -> None:
        nonlocal written
        texts = iter(transcribe([f for f in pending if f is not None]))
        for feature in pending:
            out.write((next(texts) if feature is not None else "") + "\n")
        out.flush()
        written += len(pending)
        pending.clear()

    for text in paths:
        name = text.strip()
        try:
            feature = read(Path(name)) if name else None
        except S2SError:
            flush()
            raise
        pending.append(feature)
        if len(pending) >= TRANSCRIBE_CHUNK:
            flush()
    flush()
    return written
