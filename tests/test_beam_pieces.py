"""Each piece of beam search alone (s2s.core.search.beam), on values computed by hand."""

from __future__ import annotations

import torch

from s2s.core.decoding import SearchState
from s2s.core.search.beam import (
    Beams,
    Candidates,
    candidate_scores,
    collect_nbest,
    compact,
    hypotheses,
    join_beams,
    leading,
    normalised_scores,
    restrict_candidates,
    select_candidates,
    settled,
)
from s2s.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

INF = float("-inf")


def test_candidate_scores_add_each_rows_score_and_put_a_sentences_beams_side_by_side() -> None:
    scores = torch.tensor([0.0, -1.0, -2.0, -3.0])  # two sentences, two beams each
    log_probs = torch.tensor([[-0.1, -0.2], [-0.3, -0.4], [-0.5, -0.6], [-0.7, -0.8]])
    expected = [[-0.1, -0.2, -1.3, -1.4], [-2.5, -2.6, -3.7, -3.8]]
    torch.testing.assert_close(candidate_scores(scores, log_probs, 2), torch.tensor(expected))


def test_normalised_scores_divide_by_the_length_penalty_of_each_candidates_row() -> None:
    candidates = torch.tensor([[-1.2, -1.2, -2.4, -2.4]])  # two rows, two candidates each
    lengths = torch.tensor([1, 7])  # penalties (5 + 1) / 6 = 1 and (5 + 7) / 6 = 2
    normalised = normalised_scores(candidates, lengths, 1.0, width=2)
    torch.testing.assert_close(normalised, torch.tensor([[-1.2, -1.2, -1.2, -1.2]]))
    assert torch.equal(normalised_scores(candidates, lengths, 0.0, width=2), candidates)


def test_select_candidates_takes_each_sentences_k_best_and_the_rows_they_extend() -> None:
    normalised = torch.tensor([[-1.0, -3.0, -2.0, -0.5], [-4.0, -0.25, -0.5, -9.0]])
    ranked, flat, rows = select_candidates(normalised, k=2, width=2)
    assert ranked.tolist() == [[-0.5, -1.0], [-0.25, -0.5]]
    assert flat.tolist() == [[3, 0], [1, 2]]
    assert rows.tolist() == [1, 0, 2, 3]  # sentence 1's rows are 2 and 3


def test_restrict_candidates_ends_rows_at_their_limit_and_pads_finished_ones() -> None:
    found = Candidates(
        torch.tensor([[-1.0, -2.0]] * 3),
        torch.tensor([[5, 6]] * 3),
        torch.tensor([-0.5, -0.75, -0.25]),
    )
    finished = torch.tensor([False, False, True])
    at_limit = torch.tensor([False, True, True])
    log_probs, tokens = restrict_candidates(found, finished, at_limit)
    assert log_probs.tolist() == [[-1.0, -2.0], [-0.75, INF], [0.0, INF]]
    assert tokens.tolist() == [[5, 6], [EOS_ID, EOS_ID], [PAD_ID, PAD_ID]]


def test_settled_waits_while_a_running_beam_can_still_overtake() -> None:
    finished = torch.tensor([[True, False], [True, False], [True, True]])
    ranked = torch.tensor([[-1.0, -2.0], [-1.0, -2.0], [-1.0, -2.0]])
    reachable = torch.tensor([[INF, -1.5], [INF, -0.5], [INF, INF]])
    assert settled(finished, ranked, reachable, nbest=1).tolist() == [True, False, True]
    assert settled(finished, ranked, reachable, nbest=2).tolist() == [False, False, True]
    assert leading(finished, ranked, reachable, nbest=1).tolist() == [True, True, True]
    assert leading(finished, ranked, reachable, nbest=2).tolist() == [False, False, True]


def beams_of_two_sentences() -> Beams:
    """Two running sentences (batch indices 4 and 7) of two beams each."""
    history = torch.tensor(
        [[BOS_ID, 5, EOS_ID], [BOS_ID, 6, 7], [BOS_ID, 8, EOS_ID], [BOS_ID, 9, 9]]
    )
    return Beams(
        scores=torch.tensor([-1.0, -2.0, -3.0, -4.0]),
        lengths=torch.tensor([2, 2, 2, 2]),
        finished=torch.tensor([True, False, True, False]),
        history=history,
        limit=torch.tensor([5, 5, 6, 6]),
        sentences=torch.tensor([4, 7]),
        steps=torch.tensor([2, 2, 2, 2]),
    )


def test_collect_nbest_stores_the_first_beams_of_complete_sentences() -> None:
    done: dict = {}
    ranked = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    collect_nbest(done, torch.tensor([False, True]), beams_of_two_sentences(), ranked, nbest=1)
    assert done == {7: ([[8, EOS_ID]], [-3.0])}
    found = hypotheses([[8, EOS_ID], [9, PAD_ID]], [-3.0, INF])
    assert [(h.tokens, h.score) for h in found] == [([8], -3.0)]  # -inf: never a hypothesis


def test_compact_keeps_the_rows_and_state_of_the_sentences_still_running() -> None:
    state = SearchState(torch.arange(4) * 10, torch.tensor([100, 200]))
    beams, state = compact(beams_of_two_sentences(), state, torch.tensor([1]), k=2)
    assert beams.scores.tolist() == [-3.0, -4.0]
    assert beams.history.tolist() == [[BOS_ID, 8, EOS_ID], [BOS_ID, 9, 9]]
    assert beams.limit.tolist() == [6, 6] and beams.sentences.tolist() == [7]
    assert state.hypotheses.tolist() == [20, 30] and state.sentences.tolist() == [200]


def test_beams_start_with_one_live_beam_per_sentence() -> None:
    beams = Beams.start(torch.tensor([3, 4]), k=2, numbers=torch.tensor([0, 1]))
    assert beams.scores.tolist() == [0.0, INF, 0.0, INF]
    assert beams.limit.tolist() == [3, 3, 4, 4] and beams.history.tolist() == [[BOS_ID]] * 4


def test_joining_rows_pad_their_shorter_history_on_the_left_and_keep_their_own_tokens() -> None:
    running = beams_of_two_sentences()  # two steps taken
    joining = Beams.start(torch.tensor([4]), k=2, numbers=torch.tensor([9]))
    joined = join_beams(running, joining)
    assert joined.history.tolist()[4:] == [[PAD_ID, PAD_ID, BOS_ID]] * 2
    assert joined.sentences.tolist() == [4, 7, 9] and joined.steps.tolist()[4:] == [0, 0]
    joined.history = torch.cat([joined.history, torch.tensor([[EOS_ID]] * 6)], dim=1)
    joined.steps = joined.steps + 1
    done: dict = {}
    ranked = torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-0.5, INF]])
    collect_nbest(done, torch.tensor([True, False, True]), joined, ranked, nbest=1)
    assert done == {4: ([[5, EOS_ID, EOS_ID]], [-1.0]), 9: ([[EOS_ID]], [-0.5])}
