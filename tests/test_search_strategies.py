"""Every strategy over every model: sampling a seq2seq model, beam search over a language
model (s2s.core.search with s2s.tasks.language_model.decoder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_model, source_batch

from s2s.core.search import BeamSearch, GreedySearch, Sampling
from s2s.data.batching import collate
from s2s.data.tokenizer import EOS_ID, PAD_ID
from s2s.tasks.language_model.decoder import LanguageModelDecoder
from s2s.tasks.language_model.model import build_language_model
from s2s.tasks.recipe import load_config

LM_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "lm.toml"


def tokens(found):
    return [[h.tokens for h in hyps] for hyps in found]


def test_seeded_sampling_of_a_seq2seq_model_is_reproducible_and_batch_invariant() -> None:
    torch.manual_seed(0)
    model = make_model().eval()
    sentences, batch, limits = source_batch(12, seed=1)
    sampling = Sampling(temperature=1.2, top_p=0.95, seed=5)
    together = sampling.search(model, batch.src, batch.src_lengths, limits)
    assert tokens(together) == tokens(sampling.search(model, batch.src, batch.src_lengths, limits))
    for index in [11, 0, 5]:
        alone = collate([0], [sentences[index]])
        [single] = sampling.search(model, alone.src, alone.src_lengths, limits[index : index + 1])
        assert single[0].tokens == together[index][0].tokens
        assert single[0].score == pytest.approx(together[index][0].score, abs=1e-4)
    greedy = GreedySearch().search(model, batch.src, batch.src_lengths, limits)
    assert tokens(together) != tokens(greedy)  # it samples
    other_seed = Sampling(temperature=1.2, top_p=0.95, seed=6)
    assert tokens(other_seed.search(model, batch.src, batch.src_lengths, limits)) != tokens(
        together
    )


@pytest.mark.parametrize("strategy", [Sampling(top_k=1, seed=3), Sampling(temperature=0.0)])
def test_sampling_among_the_likeliest_token_alone_is_greedy_search(strategy: Sampling) -> None:
    torch.manual_seed(1)
    model = make_model().eval()
    _, batch, limits = source_batch(16, seed=2)
    sampled = strategy.search(model, batch.src, batch.src_lengths, limits)
    greedy = GreedySearch().search(model, batch.src, batch.src_lengths, limits)
    assert tokens(sampled) == tokens(greedy)
    assert [h[0].score for h in sampled] == [h[0].score for h in greedy]


def language_model_prompts():
    torch.manual_seed(2)
    model = build_language_model(load_config(LM_RECIPE, ["model.hidden_size=16"]), 50).eval()
    prompts = [[EOS_ID, 10, 11, 12], [EOS_ID], [EOS_ID, 20, 7]]
    src = torch.full((3, 4), PAD_ID)
    for row, prompt in enumerate(prompts):
        src[row, : len(prompt)] = torch.tensor(prompt)
    lengths = torch.tensor([len(p) for p in prompts])
    return LanguageModelDecoder(model), prompts, src, lengths, torch.full((3,), 8)


def test_beam_search_continues_a_prompt_at_least_as_probably_as_greedy_search() -> None:
    decoder, _, src, lengths, limits = language_model_prompts()
    greedy = GreedySearch().search(decoder, src, lengths, limits)
    beam = BeamSearch(4, alpha=0.0, nbest=4).search(decoder, src, lengths, limits)
    for one, best in zip(greedy, beam, strict=True):
        assert best[0].score >= one[0].score - 1e-5
        assert [h.score for h in best] == sorted((h.score for h in best), reverse=True)


def test_prompts_of_different_lengths_continue_as_each_alone() -> None:
    decoder, prompts, src, lengths, limits = language_model_prompts()
    together = BeamSearch(3, alpha=0.0, nbest=2).search(decoder, src, lengths, limits)
    for index, prompt in enumerate(prompts):
        alone = torch.tensor([prompt])
        [single] = BeamSearch(3, alpha=0.0, nbest=2).search(
            decoder, alone, torch.tensor([len(prompt)]), limits[:1]
        )
        assert [h.tokens for h in single] == [h.tokens for h in together[index]]
        assert [h.score for h in single] == pytest.approx([h.score for h in together[index]])
