"""Continuous batching (s2s.tasks.translation.continuous): requests that join a running
beam search at different steps get what `translate` gives them, and what the search cannot
take is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import multi30k_lines

import s2s
from s2s.errors import S2SError

LINES = multi30k_lines("val.en.gz", 30)


@pytest.fixture(scope="module")
def model(trained_run: Path) -> s2s.Model:
    return s2s.load(trained_run, device="cpu", threads=1)


def run_until_done(search, requests: dict[str, list]) -> dict[str, list]:
    """Add one request before each step, as a server would, then step until all ended."""
    found: dict[str, list] = {}
    for key, inputs in requests.items():
        search.add(key, inputs)
        found.update(search.step())
    while len(found) < len(requests):
        found.update(search.step())
    return found


def test_requests_joining_at_different_steps_get_what_translate_gives(model: s2s.Model) -> None:
    requests = {f"r{i}": LINES[i : i + 3] for i in range(0, 30, 3)}
    search = model.continuous_translation(beam=3, nbest=2)
    found = run_until_done(search, requests)
    for key, inputs in requests.items():
        assert found[key] == model.translate(inputs, beam=3, nbest=2)
    assert search.sentences == 0 and not search.requests


def test_empty_and_invalid_utf8_inputs_are_read_as_translate_reads_them(
    model: s2s.Model,
) -> None:
    inputs = ["", "   ", b"A man \xff rides.", LINES[0]]
    search = model.continuous_translation(beam=2)
    found = run_until_done(search, {"mixed": inputs, "blank": ["", " "]})
    assert [best for best, *_ in found["mixed"]] == model.translate(inputs, beam=2)
    assert found["blank"] == [[""], [""]]  # complete without a step of search


def test_what_continuous_batching_cannot_take_is_refused_in_one_line(
    trained_run: Path, model: s2s.Model
) -> None:
    assert model.joins_running_search(beam=2) and not model.joins_running_search(beam=1)
    with pytest.raises(S2SError, match=r"^beam 1: continuous batching needs beam search"):
        model.continuous_translation(beam=1)
    constrained = s2s.load(trained_run, device="cpu", decode={"no_repeat_ngram_size": 2})
    assert not constrained.joins_running_search(beam=4)
    search = model.continuous_translation(beam=2)
    search.add("same", [LINES[0]])
    with pytest.raises(S2SError, match="request 'same' is already being translated"):
        search.add("same", [LINES[1]])


def test_a_failed_step_gives_back_every_request_and_leaves_the_search_usable(
    model: s2s.Model,
) -> None:
    search = model.continuous_translation(beam=2)
    search.add("a", LINES[:2])
    search.add("b", LINES[2:4])
    assert sorted(search.abandon()) == ["a", "b"] and search.sentences == 0
    assert run_until_done(search, {"c": LINES[:1]})["c"] == [model.translate(LINES[:1], beam=2)]


def test_an_ensemble_joins_as_one_model_does(trained_run: Path) -> None:
    ensemble = s2s.load([trained_run, trained_run], device="cpu", threads=1)
    requests = {f"r{i}": LINES[i : i + 2] for i in range(0, 8, 2)}
    found = run_until_done(ensemble.continuous_translation(beam=2), requests)
    for key, inputs in requests.items():
        assert [best for best, *_ in found[key]] == ensemble.translate(inputs, beam=2)
