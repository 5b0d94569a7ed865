"""The decoder's side of `s2s serve`: one loop that takes jobs from a pipe and answers each.

Two kinds of job arrive. A ``batch`` (requests the batcher merged) is decoded at once by its
route, as `s2s translate` decodes a chunk. A ``join`` (a translate request with beam search)
joins the running search of its options (`ContinuousTranslation`) and is answered the step
its last sentence ends, while the loop keeps stepping every running search and takes new
jobs between steps: continuous batching. The loop runs in the decoder process, or in a
thread of the server when it has none; either way its end of the pipe is all it knows.

Replies are ``(job id, "ok" | "error", outputs or exception, JobStats)``."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

Options = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class JobStats:
    """What the job shared the decoder with: requests and inputs decoded in one call (a
    batch), or in the running search at the step that ended it (a join)."""

    requests: int
    inputs: int


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


class DecodingLoop:
    """Jobs from ``connection`` decoded on ``model``, replies sent back on it."""

    def __init__(self, model: Any, connection: Connection) -> None:
        self.model, self.connection = model, connection
        self.searches: dict[Options, Any] = {}  # ContinuousTranslation per option set

    def run(self) -> None:
        """Until told to stop (None) or the other end closes: take every waiting job (wait
        for one when no search runs), then advance each running search by one step."""
        while self.receive(block=not self.searching()):
            self.advance()
        while self.searching():  # told to stop: finish what was joined
            self.advance()

    def searching(self) -> bool:
        return any(search.requests for search in self.searches.values())

    def receive(self, block: bool) -> bool:
        """Handle the jobs waiting in the pipe; False once the loop must end."""
        if not block and not self.connection.poll():
            return True
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                return False
            if message is None:
                return False
            self.handle(*message)
            if not self.connection.poll():
                return True

    def handle(
        self, kind: str, job: int, method: str, options: dict[str, Any], inputs: list
    ) -> None:
        from s2s.serve.requests import ROUTES

        if kind == "batch":
            try:
                outputs = ROUTES[method].run(self.model, inputs, options)
            except Exception as error:
                self.reply(job, "error", portable(error))
                return
            self.reply(job, "ok", outputs, JobStats(1, len(inputs)))
            return
        key = tuple(sorted(options.items()))
        try:
            search = self.searches.get(key) or self.model.continuous_translation(**options)
            self.searches[key] = search
            search.add(job, inputs)
        except Exception as error:
            self.reply(job, "error", portable(error))

    def advance(self) -> None:
        """One step of every running search; answer the jobs it completes."""
        for search in self.searches.values():
            stats = JobStats(len(search.requests), search.sentences)
            try:
                completed = search.step()
            except Exception as error:
                for job in search.abandon():
                    self.reply(job, "error", portable(error))
                continue
            for job, outputs in completed:
                self.reply(
                    job, "ok", outputs if search.nbest > 1 else [o[0] for o in outputs], stats
                )

    def reply(self, job: Hashable, status: str, value: Any, stats: JobStats | None = None) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):  # the server is gone: the
            self.connection.send((job, status, value, stats))  # next receive ends the loop
