"""Dynamic batching: requests that arrive together are decoded together.

Handlers `submit` jobs to a bounded queue; one worker thread takes the oldest job and every
queued job with the same method and options, up to a token budget, and runs them as one
call of the model (whose search batches them by length, as `s2s translate` batches a
file). A job waits for company at most ``max_wait_s`` after it arrived, or after the last
batch ended if it arrived during that batch: then the clients just answered have time to
send their next requests, and a closed loop of clients does not split into groups that
take turns at the decoder. As soon as as many jobs have come in since that batch ended as
it answered, they are taken without waiting longer.
One worker is enough: torch's operations use every core. `s2s serve` has the worker send
each batch to a decoder process (decoder_process.py), away from the event loop's GIL.

A job marked ``joins`` (a translate request with beam search) is not merged here: the
worker sends it at once to ``join`` a search that is already running (continuous batching,
decoding_loop.py), as long as the sources in that search stay within the token budget;
over it, the job waits for running ones to end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

Done = Callable[[list[Any] | None, BaseException | None], None]
RunBatch = Callable[[str, dict[str, Any], list[Any]], list[Any]]
# (method, options, inputs, reply): start a job in the running search; reply hears how it
# ended, with what it shared the search with (requests, inputs), or None
Joined = Callable[[list[Any] | None, BaseException | None, Any], None]
JoinSearch = Callable[[str, dict[str, Any], list[Any], Joined], None]


class QueueFull(Exception):
    """The queue holds its most jobs: the caller answers 503 and asks to retry."""


class ShuttingDown(Exception):
    """The batcher is draining its queue before the server exits: no new jobs."""


@dataclass
class Job:
    """One request's inputs for one method; ``done`` hears its outputs or its error, from
    the worker thread."""

    method: str
    options: dict[str, Any]
    inputs: list[Any]
    cost: int  # tokens, for the batch budget
    done: Done
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # its caller stopped waiting: skip it if not yet started
    joins: bool = False  # decoded by joining a running search, not in a batch

    @property
    def key(self) -> Hashable:
        """Jobs with equal keys may share a model call."""
        return (self.method, tuple(sorted(self.options.items())))


@dataclass
class BatchStats:
    """What the worker reports about each model call, for the metrics."""

    requests: int
    inputs: int
    tokens: int
    seconds: float


class DynamicBatcher:
    """A bounded queue of jobs and the one worker thread that decodes them in batches."""

    def __init__(
        self,
        run: RunBatch,
        max_batch_tokens: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        join: JoinSearch | None = None,
    ) -> None:
        self.run, self.join = run, join
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.pending: list[Job] = []
        self.searched_tokens = 0  # of the jobs sent to join the search, not yet answered
        self.freed = 0.0  # time.monotonic() when the last batch was answered
        self.answered = 0  # jobs it answered
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._work, name="s2s-decoder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def depth(self) -> int:
        """Jobs waiting (not yet taken by the worker)."""
        with self.condition:
            return len(self.pending)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises QueueFull when ``max_queue`` jobs wait, ShuttingDown after
        `stop`."""
        with self.condition:
            if self.stopping:
                raise ShuttingDown
            if len(self.pending) >= self.max_queue:
                raise QueueFull
            self.pending.append(job)
            self.condition.notify()

    def stop(self) -> None:
        """Refuse new jobs, decode every queued one, and end the worker."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        if self.thread.is_alive():
            self.thread.join()

    def _work(self) -> None:
        while (taken := self._next_jobs()) is not None:
            joining, jobs = taken
            if joining:
                for job in jobs:
                    self._send_to_search(job)
            else:
                self._decode(jobs)

    def _next_jobs(self) -> tuple[bool, list[Job]] | None:
        """Jobs to send to the running search (True), or the next batch (False); None when
        stopping with nothing queued or in the search."""
        with self.condition:
            while True:
                self.pending = [job for job in self.pending if not job.cancelled]
                if not self.pending:
                    if self.stopping and self.searched_tokens == 0:
                        return None
                    self.condition.wait()
                    continue
                first = self.pending[0]
                if first.joins and self.join is not None:
                    if joining := self._fill_search():
                        return True, joining
                    self.condition.wait()  # the search is full: until a job leaves it
                    continue
                batch = self._fill(first)
                # company is waited for from the later of the job's arrival and the end
                # of the last batch, whose clients may be about to send their next
                # requests; once as many jobs came after it as it answered, they are back
                waited = time.monotonic() - max(first.arrived, self.freed)
                full = sum(job.cost for job in batch) >= self.max_batch_tokens
                came_back = sum(job.arrived >= self.freed for job in batch)
                back = 0 < self.answered <= came_back
                if full or self.stopping or back or waited >= self.max_wait_s:
                    self._take(batch)
                    return False, batch
                self.condition.wait(self.max_wait_s - waited)

    def _take(self, jobs: list[Job]) -> None:
        taken = {id(job) for job in jobs}
        self.pending = [job for job in self.pending if id(job) not in taken]

    def _fill_search(self) -> list[Job]:
        """The queued joining jobs, oldest first, while the search's sources stay within the
        token budget (a job always fits an empty search); taken from the queue."""
        jobs = []
        for job in self.pending:
            if not job.joins:
                continue
            if self.searched_tokens and self.searched_tokens + job.cost > self.max_batch_tokens:
                break
            jobs.append(job)
            self.searched_tokens += job.cost
        self._take(jobs)
        return jobs

    def _send_to_search(self, job: Job) -> None:
        """Send ``job`` to join the running search; its answer frees its tokens."""
        sent = time.perf_counter()

        def joined(outputs: list[Any] | None, error: BaseException | None, shared: Any) -> None:
            with self.condition:
                self.searched_tokens -= job.cost
                self.condition.notify()
            if shared is not None:
                seconds = time.perf_counter() - sent
                self.on_batch(BatchStats(shared.requests, shared.inputs, job.cost, seconds))
            job.done(outputs, error)

        assert self.join is not None
        self.join(job.method, job.options, job.inputs, joined)

    def _fill(self, first: Job) -> list[Job]:
        """``first`` and the queued jobs it can share a call with, oldest first, while they
        fit the token budget (``first`` always does)."""
        batch, tokens = [first], first.cost
        for job in self.pending[1:]:
            if job.key == first.key and tokens + job.cost <= self.max_batch_tokens:
                batch.append(job)
                tokens += job.cost
        return batch

    def _decode(self, batch: Sequence[Job]) -> None:
        """One model call for ``batch``; when it fails and held several jobs, each job runs
        alone, so one bad request cannot fail the others."""
        started = time.perf_counter()
        inputs = [item for job in batch for item in job.inputs]
        try:
            outputs = self.run(batch[0].method, batch[0].options, inputs)
        except Exception as error:
            if len(batch) == 1:
                batch[0].done(None, error)
            else:
                for job in batch:
                    self._decode([job])
            return
        seconds = time.perf_counter() - started
        with self.condition:  # before any answer: its client's next job comes after this
            self.freed, self.answered = time.monotonic(), len(batch)
        tokens = sum(job.cost for job in batch)
        self.on_batch(BatchStats(len(batch), len(inputs), tokens, seconds))
        start = 0
        for job in batch:
            job.done(outputs[start : start + len(job.inputs)], None)
            start += len(job.inputs)
