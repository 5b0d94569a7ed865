"""Commands that list what is installed: cells and tasks, with the distribution of each."""

from __future__ import annotations

import sys

from s2s.cli.common import (
    app,
    user_errors,
)


@app.command()
@user_errors
def cells() -> None:
    """List the installed cells, who registered them, and their options.

    Shows name, class, distribution and version, whether a fused path exists, and the
    options with defaults. A cell that fails to load is listed with its error."""
    from s2s.core.cell_registry import cells_table, describe_cells

    rows = describe_cells()
    for line in cells_table(rows):
        print(line)
    for row in rows:
        if row.error:
            print(f"s2s: warning: {row.error}", file=sys.stderr)


@app.command()
@user_errors
def tasks() -> None:
    """List the installed tasks, who registered them, and the metrics they validate by.

    A task that fails to load is listed with its error."""
    from s2s.tasks.registry import task_table

    for line in task_table():
        print(line)
