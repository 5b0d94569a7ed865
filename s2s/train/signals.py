"""Graceful stop: the first SIGINT/SIGTERM asks training to finish its step and save; the
second one aborts at once (KeyboardInterrupt), for when saving itself hangs."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType

from s2s.errors import S2SError

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(S2SError):
    """Training stopped on a signal after saving; exit status 128 + signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class GracefulStop:
    """Context manager that turns the first stop signal into a flag the training loop polls.

    Outside the main thread (where handlers cannot be installed) it does nothing, and the
    default behaviour of the signals stays.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: abort now, whatever is running
        self.signum = signum
        name = signal.Signals(signum).name
        message = (
            f"s2s: {name}: stopping after this step and saving a checkpoint "
            "(press Ctrl-C again to abort without saving)\n"
        )
        # unbuffered: print() here could re-enter a write that the signal interrupted
        with contextlib.suppress(OSError, ValueError):
            os.write(sys.stderr.fileno(), message.encode())

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
