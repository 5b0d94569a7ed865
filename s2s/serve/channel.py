"""The server's end of the pipe to a `DecodingLoop`: jobs go out numbered, and a reader
thread hands each reply to the callback its job was sent with, in whatever order the loop
answers (a joined request may end before a batch sent earlier)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from s2s.serve.decoding_loop import JobStats

CLOSE_WAIT_SECONDS = 5

Reply = Callable[[list[Any] | None, BaseException | None, JobStats | None], None]


class DecoderDied(Exception):
    """The decoder process ended while it held a request (the server answers 500)."""


class Channel:
    """Sends jobs on ``connection`` and reads the replies in a thread of its own. When the
    other end goes away, every job still waiting hears ``lost()``'s error."""

    def __init__(self, connection: Connection, lost: Callable[[], BaseException]) -> None:
        self.connection, self.lost = connection, lost
        self.waiting: dict[int, Reply] = {}
        self.numbers = itertools.count()
        self.lock = threading.Lock()
        self.closed = False
        self.reader = threading.Thread(target=self._read, name="s2s-replies", daemon=True)
        self.reader.start()

    def send(
        self, kind: str, method: str, options: dict[str, Any], inputs: list[Any], reply: Reply
    ) -> None:
        """Send one job (``kind`` "batch" or "join"); ``reply`` hears its outputs or error,
        from the reader thread (or here, if the pipe is already broken)."""
        with self.lock:
            number = next(self.numbers)
            if not self.closed:
                self.waiting[number] = reply
                try:
                    self.connection.send((kind, number, method, options, inputs))
                    return
                except (BrokenPipeError, OSError):
                    self.waiting.pop(number, None)
        reply(None, self.lost(), None)

    def call(self, method: str, options: dict[str, Any], inputs: list[Any]) -> list[Any]:
        """One batch job, waited for: its outputs, or the error it raised."""
        answered = threading.Event()
        result: list[Any] = []

        def reply(outputs: Any, error: BaseException | None, stats: JobStats | None) -> None:
            result.extend([outputs, error])
            answered.set()

        self.send("batch", method, options, inputs, reply)
        answered.wait()
        outputs, error = result
        if error is not None:
            raise error
        return outputs

    def _read(self) -> None:
        while True:
            try:
                number, status, value, stats = self.connection.recv()
            except (EOFError, OSError):
                break
            with self.lock:
                reply = self.waiting.pop(number, None)
            if reply is not None:
                reply(value if status == "ok" else None, None if status == "ok" else value, stats)
        with self.lock:
            self.closed = True
            orphans, self.waiting = list(self.waiting.values()), {}
        for reply in orphans:
            reply(None, self.lost(), None)

    def close(self) -> None:
        """Close our end once the other end has gone (the reader has seen it go; a reader
        still blocked in recv would never wake from a close)."""
        self.reader.join(timeout=CLOSE_WAIT_SECONDS)
        self.connection.close()
