"""The model's decoding in a process of its own, fed batches over a pipe.

Why a process and not a thread: the search runs many small torch operations with Python
in between, and needs the GIL back after each one. In the server's process the event loop
takes the GIL for every request it parses and answers, so the search keeps waiting on it:
a thread that holds the GIL 15 % of the time slowed a beam search of 31 sentences by a fifth
(docs/serving.md). In a child process the search has an interpreter to itself; the HTTP
process keeps its own copy of the run only to count tokens and check options.

The child runs a `DecodingLoop` (batches, and translate requests joining a running search);
the server talks to it through a `Channel`. The child ignores SIGINT and SIGTERM (a Ctrl-C
or a service manager signals the whole group): the server drains its queue through it
first, then stops it. A child that dies (killed, out of memory) fails the requests it held,
and a watcher thread starts its replacement at once, so the next request does not wait for
a model to load."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from s2s.errors import S2SError
from s2s.serve.channel import Channel, DecoderDied, Reply
from s2s.serve.decoding_loop import DecodingLoop, portable

log = logging.getLogger("s2s")

STOP_SECONDS = 30  # how long a stopping child may take to finish before it is killed

__all__ = ["DecoderDied", "DecoderProcess"]


def _decoder_main(connection: Connection, run_dir: str, load_options: dict[str, Any]) -> None:
    """The child: load the run, say ready, then decode jobs until told to stop or the
    server's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from s2s.api import load

    try:
        model = load(run_dir, **load_options)
    except BaseException as error:
        connection.send(("error", portable(error)))
        return
    connection.send(("ready", None))
    DecodingLoop(model, connection).run()


class DecoderProcess:
    """One child process decoding for the server: `send` and `call` are used by the
    batcher's worker thread, `start` and `stop` by the app's lifespan."""

    def __init__(self, run_dir: Path, load_options: dict[str, Any]) -> None:
        self.run_dir, self.load_options = str(run_dir), load_options
        self.context = multiprocessing.get_context("spawn")  # no fork of a torch process
        self.process: Any = None
        self.channel: Channel | None = None
        self.lock = threading.Lock()
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the child and wait until it has loaded the run; its load error is raised
        here, so the server does not start."""
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_decoder_main,
            args=(theirs, self.run_dir, self.load_options),
            name="s2s-decoder",
            daemon=True,
        )
        process.start()
        theirs.close()
        try:
            status, value = ours.recv()
        except EOFError:
            process.join()
            raise S2SError(
                f"{self.run_dir}: the decoder process ended while loading the run "
                f"(exit code {process.exitcode})"
            ) from None
        if status == "error":
            process.join()
            raise value
        self.process, self.channel = process, Channel(ours, lambda: self._died(process))
        threading.Thread(target=self._watch, args=(process,), daemon=True).start()

    def _died(self, process: Any) -> DecoderDied:
        process.join(timeout=STOP_SECONDS)
        return DecoderDied(
            f"the decoder process died (exit code {process.exitcode}) decoding this request"
        )

    def _watch(self, process: Any) -> None:
        """Replace ``process`` as soon as it dies, unless the server is stopping it."""
        wait([process.sentinel])
        with self.lock:
            if self.stopping or self.process not in (process, None):
                return
            try:
                self._replace()
            except Exception as error:  # the next job tries again, and reports it
                log.error("s2s serve: could not restart the decoder process: %s", error)

    def _live_channel(self) -> Channel:
        with self.lock:
            if self.process is None or not self.process.is_alive():
                self._replace()
            assert self.channel is not None
            return self.channel

    def send(
        self, kind: str, method: str, options: dict[str, Any], inputs: list[Any], reply: Reply
    ) -> None:
        """Send a job to the child; ``reply`` hears how it ended (DecoderDied if the child
        dies first)."""
        self._live_channel().send(kind, method, options, inputs, reply)

    def run(self, method: str, options: dict[str, Any], inputs: list[Any]) -> list[Any]:
        """The child's outputs for one batch; raises what it raised, or DecoderDied."""
        return self._live_channel().call(method, options, inputs)

    def _replace(self) -> None:
        code = self._reap()
        log.warning("s2s serve: the decoder process had ended (exit code %s): restarting", code)
        self.start()

    def _reap(self) -> int | None:
        """Forget a dead child, returning its exit code."""
        process, self.process = self.process, None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if process is None:
            return None
        process.join(timeout=STOP_SECONDS)
        return process.exitcode

    def stop(self) -> None:
        """Let the child finish and exit (killed if it does not within STOP_SECONDS)."""
        with self.lock:
            self.stopping = True
            process, channel = self.process, self.channel
            if process is None or channel is None:
                return
            with contextlib.suppress(BrokenPipeError, OSError):
                channel.connection.send(None)
            process.join(timeout=STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
            channel.close()
            self.process = self.channel = None
