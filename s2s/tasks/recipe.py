"""Reading a recipe for work: the schema's checks (s2s.config.read_recipe, which asks the
installed tasks for the task type and its defaults), then the task's own checks, its
packages and a trial build of the model, before any data is touched."""

from __future__ import annotations

from pathlib import Path

from s2s.config import Config, read_recipe
from s2s.errors import ConfigError
from s2s.tasks.registry import check_before_work


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override, validate and resolve a recipe, checked by its task; any problem is a
    one-line ConfigError naming the recipe."""
    config = read_recipe(path, overrides)
    try:
        check_before_work(config)
    except ConfigError as error:  # raised without the file: name it
        raise ConfigError(f"{Path(path)}: {error}") from None
    return config
