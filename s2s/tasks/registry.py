"""Finding tasks (entry-point metadata of the group ``s2s.tasks``), loading them (errors
name the distribution), and the checks a recipe gets from its task when it is read.

Finding never imports a task, so a broken task plugin only fails when it is the one asked
for, or when `s2s tasks` lists it. `register_task` adds a task at run time (tests, or a
program that defines its own task without packaging it); it takes precedence over the
installed metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from s2s.config import use_task_rules
from s2s.errors import ConfigError, S2SError
from s2s.tasks.task import Task

if TYPE_CHECKING:
    from s2s.config import Config
    from s2s.run.directory import RunDir
    from s2s.train.trainer import Trainer

ENTRY_POINT_GROUP = "s2s.tasks"
REGISTERED_HERE = "registered at run time"


@dataclass(frozen=True)
class TaskEntry:
    """One registered task: its name, where it points, who registered it, how to load it."""

    name: str
    target: str
    distribution: str
    load: Callable[[], Callable[[], object]]  # imports the target: a class or factory


_runtime: dict[str, TaskEntry] = {}
_loaded: dict[str, Task] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Make ``factory()`` the task called ``name`` in this process (a `Task` subclass is a
    factory); `unregister_task` undoes it."""
    target = getattr(factory, "__qualname__", repr(factory))
    _runtime[name] = TaskEntry(name, target, REGISTERED_HERE, lambda: factory)
    _loaded.pop(name, None)


def unregister_task(name: str) -> None:
    """Forget a task `register_task` added."""
    _runtime.pop(name, None)
    _loaded.pop(name, None)


def discover_tasks() -> dict[str, TaskEntry]:
    """Every task by name, sorted: the installed entry points, then the run-time ones (which
    replace an installed task of the same name)."""
    found: dict[str, TaskEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist else "?"
        found.setdefault(ep.name, TaskEntry(ep.name, ep.value, origin, ep.load))
    found |= _runtime
    return dict(sorted(found.items()))


def task_names() -> list[str]:
    """The names of the installed tasks, sorted."""
    return list(discover_tasks())


def load_entry(entry: TaskEntry) -> Task:
    """Import and build one registered task; any failure is an error naming its origin."""
    try:
        task = entry.load()()
    except Exception as error:  # a broken plugin must not look like an s2s bug
        raise S2SError(
            f"task {entry.name!r} from {entry.distribution} failed to load: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(task, Task):
        raise S2SError(
            f"task {entry.name!r} from {entry.distribution} ({entry.target}) "
            "is not a s2s.tasks.task.Task"
        )
    return task


def find_task(name: str) -> Task:
    """The task registered as ``name`` (loaded once per process); a one-line error naming
    the installed tasks if there is none."""
    if name not in _loaded:
        tasks = discover_tasks()
        if name not in tasks:
            raise ConfigError(unknown_task_message(name, list(tasks)))
        _loaded[name] = load_entry(tasks[name])
    return _loaded[name]


def unknown_task_message(name: str, known: list[str]) -> str:
    return f"task.type: unknown task {name!r} (installed: {', '.join(known) or 'none'})"


def task_table() -> list[str]:
    """The lines of `s2s tasks`: name, class and distribution, aligned; a task that fails to
    load shows its error."""
    rows = [("name", "class", "distribution", "metrics")]
    for entry in discover_tasks().values():
        try:
            metrics = ", ".join(load_entry(entry).metrics)
        except S2SError as error:  # report it, keep listing the others
            metrics = f"error: {error}"
        rows.append((entry.name, entry.target, entry.distribution, metrics))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]


class RegisteredTaskRules:
    """The checks the schema asks of the tasks while it validates a config (s2s.config's
    `TaskRules`): the type names a registered task, which fills in its defaults."""

    def check_type(self, name: str) -> None:
        known = task_names()
        if name not in known:
            raise ValueError(unknown_task_message(name, known).removeprefix("task.type: "))

    def apply_defaults(self, config: Config) -> None:
        find_task(config.task.type).apply_defaults(config)


use_task_rules(RegisteredTaskRules())  # every config read from here on is checked by its task


def check_before_work(config: Config) -> None:
    """What a recipe needs beyond its schema, checked when it is read: before a tokeniser
    is trained or a run directory made (or cleared by --restart)."""
    task = find_task(config.task.type)
    task.check_config(config)
    task.check_extras(config)
    check_model_builds(task, config)


def check_model_builds(task: Task, config: Config) -> None:
    """Build the recipe's model once on the meta device (no memory, no data; a tiny
    vocabulary stands in for the tokeniser's), so every cell is constructed with the
    recipe's options at the sizes training will use: a cell that rejects them, or a
    layout that does not fit (dot attention between unequal widths), is a ConfigError now.
    A cell that cannot be built on the meta device is left to the real build."""
    import torch

    from s2s.core.cell_registry import side_cells

    cells = side_cells(config.model)
    try:
        with torch.device("meta"):
            task.build_meta_model(config, cells, 16)
    except (RuntimeError, NotImplementedError):
        pass


def make_trainer(config: Config, run: RunDir, quiet: bool = False) -> Trainer:
    """The trainer for the recipe's task, ready to ``train()``."""
    return find_task(config.task.type).make_trainer(config, run, quiet)
