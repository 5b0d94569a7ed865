"""The dynamic batcher of `s2s serve` on its own, with a recording model in place of a
real one: what it merges, how long a lone job waits, and that a failing input fails only
its own request."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from s2s.serve.batcher import DynamicBatcher, Job, QueueFull, ShuttingDown


class Recorder:
    """Upper-cases its inputs and remembers each call; an input "boom" raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def __call__(self, method: str, options: dict[str, Any], inputs: list[Any]) -> list[Any]:
        self.calls.append((method, list(inputs)))
        if "boom" in inputs:
            raise ValueError("boom")
        return [text.upper() for text in inputs]


class Answer:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.outputs: list[Any] | None = None
        self.error: BaseException | None = None

    def __call__(self, outputs: list[Any] | None, error: BaseException | None) -> None:
        self.outputs, self.error = outputs, error
        self.event.set()

    def wait(self) -> Answer:
        assert self.event.wait(10)
        return self


def job(inputs: list[str], method: str = "translate", beam: int = 1) -> tuple[Job, Answer]:
    answer = Answer()
    return Job(method, {"beam": beam}, inputs, len(inputs), answer), answer


def test_queued_jobs_with_the_same_options_share_one_call_in_order() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_tokens=100, max_wait_s=0.5, max_queue=10)
    jobs = [job(["a", "b"]), job(["c"]), job(["d"], beam=5), job(["e", "f"])]
    for queued, _ in jobs:
        batcher.submit(queued)
    batcher.start()
    answers = [answer.wait().outputs for _, answer in jobs]
    batcher.stop()
    assert answers == [["A", "B"], ["C"], ["D"], ["E", "F"]]
    assert model.calls == [("translate", ["a", "b", "c", "e", "f"]), ("translate", ["d"])]


def test_a_batch_stops_at_the_token_budget() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_tokens=3, max_wait_s=0.0, max_queue=10)
    for queued, _ in [job(["a", "b"]), job(["c"]), job(["d"])]:
        batcher.submit(queued)
    batcher.start()
    batcher.stop()
    assert [inputs for _, inputs in model.calls] == [["a", "b", "c"], ["d"]]


def test_a_lone_job_waits_about_the_wait_limit_and_no_longer() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_tokens=100, max_wait_s=0.2, max_queue=10)
    batcher.start()
    queued, answer = job(["a"])
    batcher.submit(queued)
    assert not answer.event.wait(0.05)  # still waiting for company
    assert answer.wait().outputs == ["A"]  # and answered once the limit passed
    batcher.stop()


def test_a_failing_input_fails_only_its_own_request() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_tokens=100, max_wait_s=0.5, max_queue=10)
    jobs = [job(["a"]), job(["boom"]), job(["c"])]
    for queued, _ in jobs:
        batcher.submit(queued)
    batcher.start()
    good, bad, other = (answer.wait() for _, answer in jobs)
    batcher.stop()
    assert good.outputs == ["A"] and other.outputs == ["C"]
    assert isinstance(bad.error, ValueError)


def test_the_queue_is_bounded_and_stop_drains_it() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_tokens=100, max_wait_s=3600.0, max_queue=2)
    first, second = job(["a"]), job(["b"])
    batcher.submit(first[0])
    batcher.submit(second[0])
    with pytest.raises(QueueFull):
        batcher.submit(job(["c"])[0])
    batcher.start()
    started = time.monotonic()
    batcher.stop()  # does not wait the hour: stopping decodes what is queued now
    assert time.monotonic() - started < 600
    assert first[1].wait().outputs == ["A"] and second[1].wait().outputs == ["B"]
    with pytest.raises(ShuttingDown):
        batcher.submit(job(["d"])[0])


class Search:
    """Stands in for the running search: remembers the jobs that joined it and answers
    one when told, saying how many requests shared the search."""

    def __init__(self) -> None:
        self.joined: list[tuple[list[Any], Any]] = []
        self.sent = threading.Condition()

    def __call__(self, method: str, options: dict[str, Any], inputs: list[Any], reply) -> None:
        with self.sent:
            self.joined.append((inputs, reply))
            self.sent.notify_all()

    def wait_for(self, count: int) -> None:
        with self.sent:
            assert self.sent.wait_for(lambda: len(self.joined) >= count, timeout=10)

    def answer(self, number: int) -> None:
        inputs, reply = self.joined[number]
        reply([text.upper() for text in inputs], None, SimpleNamespace(requests=2, inputs=3))


def joining(inputs: list[str]) -> tuple[Job, Answer]:
    queued, answer = job(inputs, beam=5)
    queued.joins = True
    return queued, answer


def test_joining_jobs_go_to_the_search_at_once_while_it_has_room_and_queue_after() -> None:
    search, batches = Search(), Recorder()
    batcher = DynamicBatcher(
        batches, max_batch_tokens=3, max_wait_s=3600.0, max_queue=1, join=search
    )
    batcher.start()
    first, second, third = joining(["a", "b"]), joining(["c"]), joining(["d"])
    batcher.submit(first[0])
    search.wait_for(1)  # not held back the hour a batch would wait for company
    batcher.submit(second[0])
    search.wait_for(2)
    batcher.submit(third[0])  # 2 + 1 tokens fill the search: this one waits in the queue
    time.sleep(0.2)
    assert len(search.joined) == 2 and batcher.depth() == 1
    with pytest.raises(QueueFull):
        batcher.submit(joining(["e"])[0])
    search.answer(0)
    assert first[1].wait().outputs == ["A", "B"]
    search.wait_for(3)  # the answer made room
    assert search.joined[2][0] == ["d"] and batches.calls == []


def test_stop_waits_for_the_jobs_in_the_search() -> None:
    search = Search()
    batcher = DynamicBatcher(
        Recorder(), max_batch_tokens=10, max_wait_s=0.0, max_queue=10, join=search
    )
    batcher.start()
    queued, answer = joining(["a"])
    batcher.submit(queued)
    search.wait_for(1)
    stopping = threading.Thread(target=batcher.stop)
    stopping.start()
    stopping.join(0.3)
    assert stopping.is_alive()  # still waiting for the joined job's answer
    with pytest.raises(ShuttingDown):
        batcher.submit(joining(["b"])[0])
    search.answer(0)
    stopping.join(10)
    assert not stopping.is_alive() and answer.wait().outputs == ["A"]


def test_jobs_queued_during_a_batch_wait_for_the_clients_it_answers() -> None:
    """A closed loop of clients: those answered by a batch send their next requests a
    moment later, and the jobs that queued meanwhile wait (up to the limit) to share a
    batch with them, rather than starting alone and splitting the clients in two groups."""
    model, started = Recorder(), threading.Event()
    release = threading.Event()

    def slow(method: str, options: dict[str, Any], inputs: list[Any]) -> list[Any]:
        started.set()
        assert release.wait(10)
        return model(method, options, inputs)

    batcher = DynamicBatcher(slow, max_batch_tokens=100, max_wait_s=0.5, max_queue=10)
    batcher.start()
    first, during, after = job(["a"]), job(["b"]), job(["c"])
    batcher.submit(first[0])
    assert started.wait(10)
    batcher.submit(during[0])  # queued while the first batch is decoded
    time.sleep(0.6)  # longer than the wait limit, but the decoder is busy
    release.set()
    first[1].wait()
    batcher.submit(after[0])  # the answered client's next request
    assert during[1].wait().outputs == ["B"] and after[1].wait().outputs == ["C"]
    batcher.stop()
    assert model.calls == [("translate", ["a"]), ("translate", ["b", "c"])]


def test_once_as_many_jobs_came_back_as_a_batch_answered_the_next_starts_at_once() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_tokens=100, max_wait_s=3.0, max_queue=10)
    first = job(["a"])
    batcher.start()
    batcher.submit(first[0])  # nothing answered yet: waits its 3 s for company
    first[1].wait()
    started, second = time.monotonic(), job(["b"])
    batcher.submit(second[0])  # the one client answered is back: no wait for company
    assert second[1].wait().outputs == ["B"]
    assert time.monotonic() - started < 1.5
    batcher.stop()
    assert model.calls == [("translate", ["a"]), ("translate", ["b"])]
