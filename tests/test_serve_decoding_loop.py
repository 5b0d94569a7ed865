"""The decoder's loop of `s2s serve` (s2s.serve.decoding_loop) over a real pipe, with a
stand-in model: joined requests are answered as their search ends them, a failing step
fails the requests in that search and leaves the loop serving, and the channel's replies
find their callers in any order."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

from s2s.serve.channel import Channel
from s2s.serve.decoding_loop import DecodingLoop


class Search:
    """Stands in for `ContinuousTranslation`: a request ends after as many steps as its
    first input is long; the word "boom" makes the next step fail."""

    nbest = 1

    def __init__(self) -> None:
        self.requests: dict[Any, list[str]] = {}
        self.steps_left: dict[Any, int] = {}

    @property
    def sentences(self) -> int:
        return sum(len(inputs) for inputs in self.requests.values())

    def add(self, key: Any, inputs: list[str]) -> None:
        self.requests[key], self.steps_left[key] = inputs, len(inputs[0])

    def step(self) -> list[tuple[Any, list[list[str]]]]:
        if any("boom" in inputs for inputs in self.requests.values()):
            raise RuntimeError("the step failed")
        for key in self.steps_left:
            self.steps_left[key] -= 1
        ended = [key for key, left in self.steps_left.items() if left <= 0]
        for key in ended:
            del self.steps_left[key]
        return [(key, [[text.upper()] for text in self.requests.pop(key)]) for key in ended]

    def abandon(self) -> list[Any]:
        keys = list(self.requests)
        self.requests.clear()
        self.steps_left.clear()
        return keys


class Model:
    def continuous_translation(self, beam: int) -> Search:
        return Search()

    def translate(self, inputs: list[str], **options: Any) -> list[str]:
        return [text.lower() for text in inputs]


@pytest.fixture
def channel():
    ours, theirs = multiprocessing.Pipe()
    loop = threading.Thread(target=DecodingLoop(Model(), theirs).run, daemon=True)
    loop.start()
    channel = Channel(ours, lambda: RuntimeError("the loop ended"))
    yield channel
    channel.connection.send(None)
    loop.join(10)
    assert not loop.is_alive()
    channel.close()


class Answers:
    def __init__(self, count: int) -> None:
        self.got: dict[str, tuple[Any, Any]] = {}
        self.order: list[str] = []
        self.all_in = threading.Event()
        self.count = count

    def to(self, name: str):
        def reply(outputs: Any, error: BaseException | None, stats: Any) -> None:
            self.got[name] = (outputs, error)
            self.order.append(name)
            if len(self.got) == self.count:
                self.all_in.set()

        return reply

    def wait(self) -> Answers:
        assert self.all_in.wait(10)
        return self


def test_joined_requests_are_answered_as_they_end_not_in_the_order_sent(channel) -> None:
    answers = Answers(2)
    channel.send("join", "translate", {"beam": 2}, ["long input"], answers.to("long"))
    channel.send("join", "translate", {"beam": 2}, ["ab"], answers.to("short"))
    answers.wait()
    assert answers.got == {"long": (["LONG INPUT"], None), "short": (["AB"], None)}
    assert answers.order == ["short", "long"]
    assert channel.call("translate", {}, ["A Batch"]) == ["a batch"]


def test_a_failing_step_fails_its_search_and_the_loop_serves_on(channel) -> None:
    answers = Answers(2)
    endless = "x" * 10**6  # a million steps: still running when the next job joins
    channel.send("join", "translate", {"beam": 2}, [endless], answers.to("bystander"))
    channel.send("join", "translate", {"beam": 2}, ["boom"], answers.to("bad"))
    answers.wait()
    for outputs, error in answers.got.values():
        assert outputs is None and str(error) == "the step failed"
    after = Answers(1)
    channel.send("join", "translate", {"beam": 2}, ["ok"], after.to("next"))
    assert after.wait().got["next"] == (["OK"], None)


def test_jobs_waiting_when_the_other_end_goes_get_the_channels_error() -> None:
    ours, theirs = multiprocessing.Pipe()
    channel = Channel(ours, lambda: RuntimeError("the decoder went away"))
    answers = Answers(2)
    channel.send("join", "translate", {}, ["a"], answers.to("sent"))
    theirs.close()  # as a killed decoder process's end closes
    answers_after = answers.to("after")
    assert answers.all_in.wait(0.1) is False
    channel.reader.join(10)
    channel.send("join", "translate", {}, ["b"], answers_after)  # the pipe is gone already
    for outputs, error in answers.wait().got.values():
        assert outputs is None and str(error) == "the decoder went away"
