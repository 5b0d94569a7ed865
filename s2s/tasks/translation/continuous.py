"""Continuous batching of translation requests: each request's sources join one running
beam search at the next step and leave it as soon as their n-best lists are final.

`s2s serve --continuous` decodes this way. A batch decoded whole (`Translator.translate`)
ends with its longest sentence, and the requests that arrive meanwhile wait for it; here a
finished sentence's client is answered at once, and its next request joins the search a
few steps later, so the search keeps nearly every waiting sentence in one batch. Each
sentence gets what `s2s translate` gives it (as a batch's search does, up to floating-point
order). The price: a request's latency grows with its output length (docs/serving.md)."""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from s2s.core.search import BeamSearch, Hypothesis, RunningBeams, output_limits
from s2s.data.batching import collate
from s2s.errors import S2SError
from s2s.tasks.translation.streaming import WarningLimiter, source_ids, text_lines
from s2s.tasks.translation.translator import Translator

JOIN_SHARE = 0.125  # sources wait to join until they are this share of those running
JOIN_WAIT_STEPS = 4  # or until the oldest has waited this many steps


def joins_running_search(translator: Translator, beam_size: int) -> bool:
    """Whether sentences of this translator can join a running search: beam search (a
    beam of 1 is `GreedySearch`, a loop of its own that takes no sentences mid-way),
    without output constraints (their state holds each hypothesis's whole history, which
    has no neutral padding)."""
    decode = translator.decode
    return beam_size > 1 and decode.no_repeat_ngram_size == 0 and decode.min_length == 0


@dataclass
class Pending:
    """One request in the search: its n-best lists, filled as its sources finish."""

    found: list[list[Hypothesis]]
    waiting: int  # sources still searched


@dataclass
class ContinuousTranslation:
    """Requests (lists of texts, each under a key) joining one beam search of ``beam_size``
    beams that keeps ``nbest`` outputs per source; `step` advances every source one token
    and returns the requests it completes, with their n-best texts."""

    translator: Translator
    beam_size: int
    nbest: int
    max_input_tokens: int = 1024
    requests: dict[Hashable, Pending] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not joins_running_search(self.translator, self.beam_size):
            raise S2SError(
                f"beam {self.beam_size}: continuous batching needs beam search (a beam over 1) "
                "without decode.no_repeat_ngram_size or decode.min_length"
            )
        decode = self.translator.decode
        search = BeamSearch(self.beam_size, decode.length_penalty, self.nbest, decode.stopping)
        self.running = RunningBeams(search, self.translator.decoder or self.translator.model)
        self.completed: list[tuple[Hashable, list[list[str]]]] = []
        self.joining: list[tuple[tuple[Hashable, int], list[int]]] = []  # (key, input), ids
        self.waited = 0  # steps the oldest joining source has waited

    @property
    def sentences(self) -> int:
        """Sources being searched or about to join."""
        return self.running.sentences + len(self.joining)

    def add(self, key: Hashable, items: Sequence[str | bytes]) -> None:
        """Queue a request's texts, read as `translate` reads them (invalid UTF-8 replaced,
        over-long sources cut, quietly: a server logs requests, not lines), to join the
        search at the next `step`; an empty text gets an empty output, and a request of
        empty texts is complete at once."""
        if key in self.requests:
            raise S2SError(f"request {key!r} is already being translated")
        lines = text_lines(items)
        quiet = WarningLimiter(stream=io.StringIO())
        ids = source_ids(self.translator, lines, self.max_input_tokens, quiet)
        searched = [index for index, seq in enumerate(ids) if seq]
        self.requests[key] = Pending([[] for _ in ids], len(searched))
        if not searched:
            self._complete(key)
        self.joining += [((key, index), ids[index]) for index in searched]

    def step(self) -> list[tuple[Hashable, list[list[str]]]]:
        """The queued sources join (one encoder call for all: it costs about as much for
        one source as for four), then one step of the search; returns the requests
        complete since the last call (those completed by `add` too), each with one
        n-best list of texts per input."""
        if self._time_to_join():
            self._join()
        if self.running.sentences:
            with self.translator.autocast():
                ended = self.running.step()
            for (key, index), hypotheses in ended:
                pending = self.requests[key]
                pending.found[index] = hypotheses
                pending.waiting -= 1
                if pending.waiting == 0:
                    self._complete(key)
        completed, self.completed = self.completed, []
        return completed

    def _time_to_join(self) -> bool:
        """Join when nothing runs, when the queued sources are a JOIN_SHARE of those running,
        or when the oldest has waited JOIN_WAIT_STEPS steps: an encoder call costs about
        as much for one source as for four, so joining one at a time would cost more than
        the steps a source waits."""
        if not self.joining:
            return False
        self.waited += 1
        running = self.running.sentences
        if running and len(self.joining) < running * JOIN_SHARE and self.waited < JOIN_WAIT_STEPS:
            return False
        self.waited = 0
        return True

    def _join(self) -> None:
        keys = [key for key, _ in self.joining]
        batch = collate(list(range(len(keys))), [ids for _, ids in self.joining])
        self.joining = []
        batch = batch.to(self.translator.device)
        limits = output_limits(batch.src_lengths, self.translator.decode)
        with self.translator.autocast():
            self.running.join(
                batch.src, batch.src_lengths, limits, [keys[i] for i in batch.indices]
            )

    def abandon(self) -> list[Hashable]:
        """Drop every request (after a step failed: the search's state is no longer
        trusted) and return their keys, so the caller can answer each with the error."""
        keys = list(self.requests)
        self.requests.clear()
        self.joining = []
        self.completed = [done for done in self.completed if done[0] not in keys]
        self.running = RunningBeams(self.running.search, self.running.decoder)
        return keys

    def _complete(self, key: Hashable) -> None:
        pending = self.requests.pop(key)
        self.completed.append((key, self.translator.detokenize(pending.found)))
