"""No module outside s2s/tasks/ switches on a task type: the generic code (config, training
loop, run loading, averaging, model card, DDP, CLI) asks the task object instead."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "s2s"
TASK_NAMES = {"translation", "summarization", "language_model", "speech"}


def _is_task_type(node: ast.AST) -> bool:
    """``<something>.task.type``, or a name that says it holds a task type."""
    if isinstance(node, ast.Attribute):
        if node.attr == "type" and isinstance(node.value, ast.Attribute):
            return node.value.attr == "task"
        return node.attr == "task_type"
    return isinstance(node, ast.Name) and node.id == "task_type"


def _is_task_name(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TASK_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_task_name(item) for item in node.elts)
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("frozenset", "set"):
        return any(_is_task_name(arg) for arg in node.args)
    return False


def task_type_comparisons(source: str) -> list[int]:
    """Line numbers of comparisons against a task name or of a task config's ``type``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_task_type(op) or _is_task_name(op) for op in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _is_task_type(node.slice):
            lines.append(node.lineno)  # a table keyed by task type: a switch by another name
    return lines


def test_no_module_outside_the_tasks_compares_a_task_type() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "tasks") in path.parents:
            continue
        for line in task_type_comparisons(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not found, "compare the task's attributes instead: " + ", ".join(found)


def test_the_walk_finds_each_kind_of_switch() -> None:
    switches = [
        'if config.task.type == "speech": pass',
        'if task in ("translation", "summarization"): pass',
        'ok = task_type not in frozenset({"translation"})',
        "metrics = TASK_METRICS[config.task.type]",
        'if "language_model" == card["task"]["type"]: pass',
    ]
    for source in switches:
        assert task_type_comparisons(source), source
    assert not task_type_comparisons("if find_task(config.task.type).supports_ddp: pass")
    assert not task_type_comparisons("task = task if task is not None else default")
