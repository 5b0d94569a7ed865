"""Ensembles, language-model fusion and output constraints: decoders around decoders, tested
with scripted decoders whose step probabilities are fixed by hand, and for batch invariance
with real models under every strategy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import VOCAB, sharp_model, source_batch

from s2s.core.decoding import SearchState
from s2s.core.search import BeamSearch, GreedySearch, Sampling
from s2s.core.search.combined import EnsembleDecoder, FusionDecoder
from s2s.core.search.constraints import ConstrainedDecoder, Constraints, forbid_repeats
from s2s.data.batching import collate
from s2s.data.tokenizer import EOS_ID
from s2s.tasks.language_model.decoder import LanguageModelDecoder
from s2s.tasks.language_model.model import build_language_model
from s2s.tasks.recipe import load_config

A, B, C = 4, 5, 6
V = 8


class PositionScript:
    """Next-token probabilities by output position (the same for every row); after the
    script, EOS. Its state counts the steps taken."""

    scores_chosen_rows = False

    def __init__(self, *positions: dict[int, float]) -> None:
        self.positions = positions

    def start(self, src, src_lengths):
        return SearchState(torch.zeros(src.size(0), dtype=torch.long))

    def step(self, prev_tokens, state, rows=None):
        t = state.hypotheses
        table = torch.full((len(self.positions) + 1, V), 1e-9)
        for position, probs in enumerate(self.positions):
            for token, p in probs.items():
                table[position, token] = p
        table[len(self.positions), EOS_ID] = 1.0
        log_probs = table[t.clamp(max=len(self.positions))].log()
        return log_probs, SearchState(t + 1)


def one_source():
    return torch.tensor([[7, EOS_ID]]), torch.tensor([2]), torch.tensor([6])


def greedy(decoder) -> tuple[list[int], float]:
    [[found]] = GreedySearch().search(decoder, *one_source())
    return found.tokens, found.score


# -- ensembles --------------------------------------------------------------------------------


def test_an_ensemble_follows_the_average_of_its_members_probabilities() -> None:
    first = PositionScript({A: 0.6, B: 0.4})
    second = PositionScript({A: 0.1, B: 0.9})
    assert greedy(first)[0] == [A] and greedy(second)[0] == [B]
    tokens, score = greedy(EnsembleDecoder([first, second]))
    assert tokens == [B]
    assert score == pytest.approx(math.log(0.65))  # mean of 0.4 and 0.9; EOS then certain


def test_members_of_different_vocabularies_are_refused() -> None:
    class Wider(PositionScript):
        def step(self, prev_tokens, state, rows=None):
            log_probs, state = super().step(prev_tokens, state, rows)
            return torch.cat([log_probs, log_probs[:, :1]], dim=1), state

    with pytest.raises(ValueError, match=r"different vocabularies: sizes \[8, 9\]"):
        greedy(EnsembleDecoder([PositionScript({A: 1.0}), Wider({A: 1.0})]))


def test_an_ensemble_of_one_model_twice_is_that_model() -> None:
    model = sharp_model(0)
    _, batch, limits = source_batch(8, seed=1)
    search = BeamSearch(4, nbest=2)
    alone = search.search(model, batch.src, batch.src_lengths, limits)
    twice = search.search(EnsembleDecoder([model, model]), batch.src, batch.src_lengths, limits)
    for one, two in zip(alone, twice, strict=True):
        assert [h.tokens for h in one] == [h.tokens for h in two]
        assert [h.score for h in one] == pytest.approx([h.score for h in two], abs=1e-5)


STRATEGIES = [GreedySearch(), BeamSearch(4, nbest=2), Sampling(temperature=1.3, seed=4)]


def assert_batch_invariant(decoder_for, strategy, count: int = 10) -> None:
    """Every sentence gets the same output alone as in the batch (``decoder_for`` builds
    the decoder for a batch of the given sentence indices)."""
    sentences, batch, limits = source_batch(count, seed=3)
    together = strategy.search(
        decoder_for(list(range(count))), batch.src, batch.src_lengths, limits
    )
    for index in (0, count // 2, count - 1):
        alone = collate([0], [sentences[index]])
        [single] = strategy.search(
            decoder_for([index]), alone.src, alone.src_lengths, limits[index : index + 1]
        )
        assert [h.tokens for h in single] == [h.tokens for h in together[index]]
        assert [h.score for h in single] == pytest.approx(
            [h.score for h in together[index]], abs=1e-4
        )


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["greedy", "beam", "sampling"])
def test_an_ensemble_decodes_a_sentence_alike_alone_and_in_a_batch(strategy) -> None:
    ensemble = EnsembleDecoder([sharp_model(0), sharp_model(1)])
    assert_batch_invariant(lambda rows: ensemble, strategy)


# -- language-model fusion --------------------------------------------------------------------


def test_fusion_adds_the_weighted_language_model_log_probabilities() -> None:
    model = PositionScript({A: 0.6, B: 0.4})
    language_model = PositionScript({A: 0.1, B: 0.9})
    assert greedy(FusionDecoder(model, language_model, 0.1, EOS_ID))[0] == [A]
    tokens, score = greedy(FusionDecoder(model, language_model, 1.0, EOS_ID))
    assert tokens == [B]
    assert score == pytest.approx(math.log(0.4) + math.log(0.9))


def small_language_model():
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "lm.toml"
    torch.manual_seed(2)
    config = load_config(recipe, ["model.hidden_size=16", "model.embed_size=16"])
    return LanguageModelDecoder(build_language_model(config, VOCAB).eval())


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["greedy", "beam", "sampling"])
def test_fusion_decodes_a_sentence_alike_alone_and_in_a_batch(strategy) -> None:
    fused = FusionDecoder(sharp_model(0), small_language_model(), 0.3, EOS_ID)
    assert_batch_invariant(lambda rows: fused, strategy)


# -- constraints ------------------------------------------------------------------------------


def test_a_forced_prefix_is_output_first_at_the_model_probability() -> None:
    model = PositionScript({A: 0.7, B: 0.3}, {A: 0.2, B: 0.2, C: 0.6})
    tokens, score = greedy(ConstrainedDecoder(model, Constraints(prefixes=[[B]])))
    assert tokens == [B, C]
    assert score == pytest.approx(math.log(0.3) + math.log(0.6))


def test_a_minimum_length_forbids_ending_before_it() -> None:
    model = PositionScript({EOS_ID: 0.9, A: 0.1}, {EOS_ID: 0.9, B: 0.1})
    assert greedy(model)[0] == []
    tokens, _ = greedy(ConstrainedDecoder(model, Constraints(min_lengths=[2])))
    assert tokens == [A, B]


def test_no_repeat_ngram_forbids_a_second_occurrence() -> None:
    loop = PositionScript(*[{A: 0.6, B: 0.4}, {B: 0.6, A: 0.4}] * 2)
    assert greedy(loop)[0] == [A, B, A, B]
    tokens, _ = greedy(ConstrainedDecoder(loop, Constraints(no_repeat_ngram_size=2)))
    assert tokens == [A, B, A, A]  # a second "A B" is banned; "A A" is new
    history = torch.tensor([[A, B, A], [A, B, C]])
    banned = forbid_repeats(torch.zeros(2, V), history, 2).isinf()
    assert banned[0].nonzero().flatten().tolist() == [B] and not banned[1].any()


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["greedy", "beam", "sampling"])
def test_constraints_decode_a_sentence_alike_alone_and_in_a_batch(strategy) -> None:
    model = sharp_model(0)
    generator = torch.Generator().manual_seed(9)
    prefixes = [torch.randint(4, VOCAB, (n % 3,), generator=generator).tolist() for n in range(10)]
    floors = [n % 4 for n in range(10)]

    def decoder_for(rows: list[int]) -> ConstrainedDecoder:
        constraints = Constraints([prefixes[r] for r in rows], 2, [floors[r] for r in rows])
        return ConstrainedDecoder(model, constraints)

    assert_batch_invariant(decoder_for, strategy)
    _, batch, limits = source_batch(10, seed=3)
    found = strategy.search(decoder_for(list(range(10))), batch.src, batch.src_lengths, limits)
    for index, hyps in enumerate(found):
        for hypothesis in hyps:
            assert hypothesis.tokens[: len(prefixes[index])] == prefixes[index]
            bigrams = list(zip(hypothesis.tokens, hypothesis.tokens[1:], strict=False))
            assert len(bigrams) == len(set(bigrams))
