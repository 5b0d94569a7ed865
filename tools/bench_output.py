"""Where a benchmark writes its results: checked when the arguments are read, so a typo in
--json does not throw away a run that took minutes."""

from __future__ import annotations

import argparse
from pathlib import Path


def json_path(text: str) -> Path:
    """An argparse type for --json: a file whose folder exists (it may not exist yet)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: its folder does not exist")
    return path
