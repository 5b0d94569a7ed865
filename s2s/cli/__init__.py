"""The `s2s` command line. Commands only parse arguments and call the library; torch and
friends are imported inside the commands so `s2s --help` stays fast. One module per command
group registers its commands on the app in s2s.cli.common."""

from __future__ import annotations

import sys

# importing each command module registers its commands on the app
from s2s.cli import common, decode, export, forecast, plugins, runs, serve, train  # noqa: F401
from s2s.cli.common import app
from s2s.errors import S2SError

__all__ = ["app", "main", "script"]


def main() -> None:
    """Run the command line in this process, as set up by the caller."""
    app()


def script() -> None:
    """The `s2s` script and `python -m s2s` (DDP workers too): first, once, restart under
    tcmalloc where the system has it (s2s.kernels.allocator), then run the command, which may set
    the CPU's floating-point modes (s2s.kernels.denormals)."""
    from s2s.kernels.allocator import restart_under_tcmalloc

    try:
        restart_under_tcmalloc()
    except S2SError as error:  # a malformed S2S_TCMALLOC, before any command runs
        print(f"s2s: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    common.OWN_PROCESS = True
    main()
