"""Decoding in a thread of the server's own process, on the server's copy of the model: the
app built without a decoder process (as a Python program may embed it). The same
`DecodingLoop` as the decoder process's, over a pipe within the process."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from typing import Any

from s2s.serve.channel import Channel, Reply
from s2s.serve.decoding_loop import DecodingLoop


class InThread:
    """A decoder whose loop runs in a thread; `stop` ends it once its jobs are answered."""

    pid = None  # no process of its own

    def __init__(self, model: Any) -> None:
        ours, theirs = multiprocessing.Pipe()
        loop = DecodingLoop(model, theirs)
        self.thread = threading.Thread(target=loop.run, name="s2s-decoding", daemon=True)
        self.thread.start()
        self.channel = Channel(ours, lambda: RuntimeError("the decoding thread ended"))

    def send(
        self, kind: str, method: str, options: dict[str, Any], inputs: list[Any], reply: Reply
    ) -> None:
        self.channel.send(kind, method, options, inputs, reply)

    def run(self, method: str, options: dict[str, Any], inputs: list[Any]) -> list[Any]:
        return self.channel.call(method, options, inputs)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.channel.connection.send(None)
        self.thread.join()
        self.channel.close()
