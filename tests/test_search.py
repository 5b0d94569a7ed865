"""Search, tested with a scripted decoder whose step probabilities are fixed by hand, and
for batch invariance with a real model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import VOCAB, make_model, sharp_model

import s2s.core.search.beam as beam_module
from s2s.core.decoding import SearchState
from s2s.core.search import (
    BeamSearch,
    GreedySearch,
    RunningBeams,
    length_penalty,
    max_output_lengths,
    top_k_rows,
)
from s2s.data.batching import collate
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

A, B = 4, 5
# next-token probabilities after each prefix (BOS excluded); anything else ends at once
SCRIPT = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS_ID: 0.4, A: 0.3, B: 0.3},
    (B,): {EOS_ID: 0.9, A: 0.05, B: 0.05},
}


class ScriptedModel:
    """A decoder whose distributions come from SCRIPT; its state is the token history."""

    vocab = 6
    scores_chosen_rows = False

    def start(self, src, src_lengths):
        return SearchState(torch.zeros(src.size(0), 0, dtype=torch.long))

    def step(self, prev_tokens, state, rows=None):
        first = bool((prev_tokens == BOS_ID).all())
        history = state.hypotheses
        if not first:
            history = torch.cat([history, prev_tokens.unsqueeze(1)], dim=1)
        rows = []
        for row in history.tolist():
            probs = torch.full((self.vocab,), 1e-9)
            for token, p in SCRIPT.get(tuple(row), {EOS_ID: 1.0}).items():
                probs[token] = p
            rows.append(probs.log())
        return torch.stack(rows), SearchState(history)


def greedy_search(model, src, src_lengths, max_lengths):
    """Greedy search's one hypothesis per sentence."""
    return [h for [h] in GreedySearch().search(model, src, src_lengths, max_lengths)]


def beam_search(
    model, src, src_lengths, max_lengths, beam_size, alpha=1.0, nbest=1, stopping="exact"
):
    """Beam search's n-best lists."""
    strategy = BeamSearch(beam_size, alpha, nbest, stopping)
    return strategy.search(model, src, src_lengths, max_lengths)


def run_scripted(search, **kwargs):
    src = torch.tensor([[7, EOS_ID]])
    return search(ScriptedModel(), src, torch.tensor([2]), torch.tensor([5]), **kwargs)


def test_beam_finds_the_best_sequence_that_greedy_misses() -> None:
    greedy = run_scripted(greedy_search)[0]
    assert greedy.tokens == [A]
    assert greedy.score == pytest.approx(math.log(0.6) + math.log(0.4), abs=1e-6)

    best = run_scripted(beam_search, beam_size=2, alpha=0.0)[0][0]
    assert best.tokens == [B]
    assert best.score == pytest.approx(math.log(0.4) + math.log(0.9), abs=1e-6)


def test_nbest_is_sorted_and_length_normalised() -> None:
    nbest = run_scripted(beam_search, beam_size=2, alpha=1.0, nbest=2)[0]
    assert [h.tokens for h in nbest] == [[B], [A]]
    penalty = (5 + 2) / 6  # two tokens, EOS included
    assert nbest[0].score == pytest.approx(math.log(0.36) / penalty, abs=1e-6)
    assert nbest[1].score == pytest.approx(math.log(0.24) / penalty, abs=1e-6)


def test_length_penalty_formula() -> None:
    lengths = torch.tensor([1, 7])
    assert length_penalty(lengths, 0.0).tolist() == [1.0, 1.0]
    torch.testing.assert_close(length_penalty(lengths, 0.6), ((5 + lengths) / 6.0) ** 0.6)


def test_output_is_cut_at_each_sentences_own_limit() -> None:
    model = make_model()
    with torch.no_grad():
        model.output.bias[EOS_ID] = -1e4  # this model never wants to stop
    batch = collate([0, 1], [[5, 6, 7, 8, 9, 10], [11]])
    limits = torch.tensor([9, 3])
    greedy = greedy_search(model, batch.src, batch.src_lengths, limits)
    assert [len(h.tokens) for h in greedy] == [9, 3]
    beams = beam_search(model, batch.src, batch.src_lengths, limits, beam_size=3)
    assert [len(h[0].tokens) for h in beams] == [9, 3]


def test_beam_size_one_equals_greedy() -> None:
    model = sharp_model()
    generator = torch.Generator().manual_seed(3)
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in range(1, 20)]
    batch = collate(list(range(len(sentences))), sentences)
    limits = max_output_lengths(batch.src_lengths, 1.5, 3)
    greedy = greedy_search(model, batch.src, batch.src_lengths, limits)
    beam = beam_search(model, batch.src, batch.src_lengths, limits, beam_size=1)
    assert [h.tokens for h in greedy] == [h[0].tokens for h in beam]


def test_every_sentence_gets_the_same_beam_output_alone_or_in_a_batch_of_64() -> None:
    model = sharp_model()
    generator = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 25, (64,), generator=generator).tolist()
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    batch = collate(list(range(64)), sentences)
    limits = max_output_lengths(batch.src_lengths, 1.5, 3)
    together = beam_search(model, batch.src, batch.src_lengths, limits, beam_size=5, nbest=5)
    for index, sentence in enumerate(sentences):
        alone = collate([0], [sentence])
        single = beam_search(
            model, alone.src, alone.src_lengths, limits[index : index + 1], beam_size=5, nbest=5
        )[0]
        assert [h.tokens for h in together[index]] == [h.tokens for h in single]
        for a, b in zip(together[index], single, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_sentences_joining_a_running_search_get_what_they_get_alone() -> None:
    model = sharp_model()
    generator = torch.Generator().manual_seed(11)
    lengths = torch.randint(1, 25, (24,), generator=generator).tolist()
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    search = BeamSearch(4, alpha=1.0, nbest=2)
    running, found = RunningBeams(search, model), {}
    for step, start in enumerate(range(0, 24, 3)):  # 3 join, one step runs, 3 more join...
        batch = collate(list(range(start, start + 3)), sentences)
        limits = max_output_lengths(batch.src_lengths, 1.5, 3)
        running.join(batch.src, batch.src_lengths, limits, [f"s{i}" for i in batch.indices])
        found.update(running.step() if step % 2 else [])
    while running.sentences:
        found.update(running.step())
    assert sorted(found) == sorted(f"s{i}" for i in range(24))
    for index, sentence in enumerate(sentences):
        alone = collate([0], [sentence])
        limits = max_output_lengths(alone.src_lengths, 1.5, 3)
        single = search.search(model, alone.src, alone.src_lengths, limits)[0]
        assert [h.tokens for h in found[f"s{index}"]] == [h.tokens for h in single]
        for a, b in zip(found[f"s{index}"], single, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)


@pytest.mark.parametrize("width", [8000, 8003, 1031, 40])
def test_top_k_rows_finds_what_torch_topk_finds(width: int) -> None:
    """The striped search returns torch.topk's values, best first, at columns that hold
    them: with ties (bf16-rounded values), -inf columns and widths not a multiple of 8."""
    generator = torch.Generator().manual_seed(width)
    for trial in range(12):
        values = torch.randn(33, width, generator=generator)
        if trial % 3 == 0:
            values = values.bfloat16().float()  # many exact ties
        if trial % 4 == 1:
            values[:, ::3] = float("-inf")
        if trial == 2:  # the best in one strip: every column of one group
            values[:, 7::8] += 10.0
        top, columns = top_k_rows(values, 5)
        expected = values.topk(5, dim=-1).values
        assert torch.equal(top, expected)
        assert torch.equal(values.gather(1, columns), expected)
        assert (columns.sort(dim=1).values.diff(dim=1) > 0).all()  # no column twice


@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
@pytest.mark.parametrize("copy", [False, True])
def test_beams_reading_one_encoder_row_per_sentence_find_the_same(
    attention: str, copy: bool
) -> None:
    """Beam search hands the model one encoder row per sentence for all its beams; the
    n-best lists equal those of the same search over a copy of the row for every beam."""
    model = make_model(attention=attention, copy=copy, tie_embeddings=False)
    with torch.no_grad():
        model.output.weight.mul_(30.0)  # peaked: float noise cannot reorder candidates
    generator = torch.Generator().manual_seed(11)
    lengths = torch.randint(1, 20, (24,), generator=generator).tolist()
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    batch = collate(list(range(24)), sentences)
    limits = max_output_lengths(batch.src_lengths, 1.5, 3)

    def search(decoder):
        return beam_search(decoder, batch.src, batch.src_lengths, limits, beam_size=4, nbest=4)

    assert model.start(batch.src, batch.src_lengths).sentences is not None
    shared = search(model)
    copied = search(EncoderPerHypothesis(model))
    for one, other in zip(shared, copied, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in other]
        assert [h.score for h in one] == pytest.approx([h.score for h in other], abs=1e-4)


class EncoderPerHypothesis:
    """The model with its encoder output declared per hypothesis, so beam search copies it
    for every beam."""

    def __init__(self, model) -> None:
        self.model = model
        self.scores_chosen_rows = model.scores_chosen_rows

    def start(self, src, src_lengths):
        state = self.model.start(src, src_lengths)
        return SearchState((state.hypotheses, state.sentences))

    def step(self, tokens, state, rows=None):
        decoder_state, encoded = state.hypotheses
        log_probs, after = self.model.step(tokens, SearchState(decoder_state, encoded), rows)
        return log_probs, SearchState((after.hypotheses, encoded))


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_scoring_only_running_rows_finds_the_same(amp, monkeypatch) -> None:
    """Finished hypotheses take PAD whatever the model says, so beam search asks the output
    layer for the running rows alone: fewer rows through it, the same n-best lists."""
    model = make_model(tie_embeddings=False)
    with torch.no_grad():
        model.output.weight.mul_(30.0)  # peaked: float noise cannot reorder candidates
        model.output.bias[EOS_ID] = 2.0  # hypotheses end at many different steps
    generator = torch.Generator().manual_seed(5)
    lengths = torch.randint(1, 20, (32,), generator=generator).tolist()
    sentences = [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    batch = collate(list(range(32)), sentences)
    limits = max_output_lengths(batch.src_lengths, 1.5, 3)
    scored = []
    project = model._project

    def counting_project(attentional):
        scored.append(attentional.numel() // attentional.size(-1))
        return project(attentional)

    model._project = counting_project

    def search():
        scored.clear()
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            found = beam_search(model, batch.src, batch.src_lengths, limits, 4, nbest=2)
        return found, sum(scored)

    assert model.scores_chosen_rows
    running_only, running_rows = search()
    monkeypatch.setattr(type(model), "scores_chosen_rows", False)  # every row, as with copy
    every, every_rows = search()
    assert running_rows < every_rows
    # bf16 logits of a row may round differently when a matmul has fewer rows
    tolerance = {"abs": 1e-4} if amp is None else {"rel": 1e-2}
    for one, other in zip(running_only, every, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in other]
        assert [h.score for h in one] == pytest.approx([h.score for h in other], **tolerance)


def test_a_copy_model_scores_every_row() -> None:
    model = make_model(copy=True)
    assert not model.scores_chosen_rows
    batch = collate([0], [[5, 6, 7]])
    encoded = model.encode(batch.src, batch.src_lengths)
    state = model.initial_state(encoded)
    with pytest.raises(ValueError, match="a copy model scores every row"):
        model.decode_step(torch.tensor([BOS_ID]), state, encoded, torch.tensor([0]))


class MarkovModel:
    """Next-token log-probabilities from a random table per sentence and previous token:
    hypotheses end at many different steps, as a trained model's do."""

    vocab = 12
    scores_chosen_rows = False

    def __init__(self, sentences: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        logits = 3.0 * torch.randn(sentences, self.vocab, self.vocab, generator=generator)
        logits[..., [PAD_ID, BOS_ID]] = float("-inf")
        self.table = logits.log_softmax(dim=-1)

    def start(self, src, src_lengths):
        return SearchState(torch.arange(src.size(0)))  # which sentence's table a row reads

    def step(self, prev_tokens, state, rows=None):
        return self.table[state.hypotheses, prev_tokens], state


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("nbest", [1, 3])
def test_stopping_once_the_nbest_are_settled_changes_no_output(
    alpha: float, nbest: int, monkeypatch
) -> None:
    """A sentence leaves the search when no running beam can overtake its n best; that
    saves decoder rows and returns exactly what running every beam to its end returns."""
    model = MarkovModel(256, seed=int(alpha * 10) + nbest)
    settled, settled_rows = _search_rows(model, alpha, nbest, "exact")
    monkeypatch.setitem(
        beam_module.STOPPING_RULES, "exact", lambda finished, *_: finished.all(dim=1)
    )
    exhaustive, exhaustive_rows = _search_rows(model, alpha, nbest, "exact")
    assert settled_rows < exhaustive_rows
    for one, other in zip(settled, exhaustive, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in other]
        assert [h.score for h in one] == pytest.approx([h.score for h in other], abs=1e-5)


def _search_rows(model: MarkovModel, alpha: float, nbest: int, stopping: str):
    """Beam-4 search of 256 one-token sources under ``stopping``; with the decoder rows run."""
    rows = []
    step = model.step

    def counting_step(prev, state, rows_to_score=None):
        rows.append(prev.size(0))
        return step(prev, state, rows_to_score)

    model.step = counting_step
    src = torch.full((256, 1), 7)
    limits = torch.randint(3, 20, (256,), generator=torch.Generator().manual_seed(1))
    found = beam_search(model, src, torch.ones(256), limits, 4, alpha, nbest, stopping)
    model.step = step
    return found, sum(rows)


@pytest.mark.parametrize("nbest", [1, 3])
def test_early_stopping_is_exact_without_a_length_penalty(nbest: int) -> None:
    """With raw log-probabilities (alpha 0) a running beam only falls, so stopping once the
    n best are finished loses nothing: the same output from the same work."""
    model = MarkovModel(256, seed=5 + nbest)
    exact, exact_rows = _search_rows(model, 0.0, nbest, "exact")
    early, early_rows = _search_rows(model, 0.0, nbest, "early")
    assert early_rows == exact_rows
    for one, other in zip(early, exact, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in other]


@pytest.mark.parametrize("nbest", [1, 3])
def test_early_stopping_runs_fewer_rows_under_a_length_penalty(nbest: int) -> None:
    """With alpha 1 a longer hypothesis can still overtake, so exact search runs on; early
    stopping ends each sentence as soon as its n best are finished, and returns them."""
    model = MarkovModel(256, seed=9 + nbest)
    _, exact_rows = _search_rows(model, 1.0, nbest, "exact")
    early, early_rows = _search_rows(model, 1.0, nbest, "early")
    assert early_rows < exact_rows
    for sentence, hypotheses in enumerate(early):
        assert len(hypotheses) == nbest
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        for h in hypotheses:  # complete hypotheses, scored by their own tokens
            path = [BOS_ID, *h.tokens, EOS_ID]
            table = model.table[sentence]
            total = sum(float(table[a, b]) for a, b in itertools.pairwise(path))
            normalised = total / float(length_penalty(torch.tensor(len(path) - 1), 1.0))
            assert h.score == pytest.approx(normalised, abs=1e-4)
