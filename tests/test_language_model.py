"""Language modelling: perplexity arithmetic, TBPTT state carrying over contiguous streams,
sampling filters, and a user's path through `s2s train / generate / score / evaluate` on a
slice of the real WikiText-2 data shipped with recipes/lm.toml."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_overrides

from s2s.core.search import filter_top_k, filter_top_p
from s2s.data.tokenizer import EOS_ID
from s2s.errors import ConfigError, S2SError
from s2s.run import cell_record
from s2s.run.averaging import average_last
from s2s.run.directory import RunDir
from s2s.run.metrics_log import read_metrics
from s2s.tasks.language_model.data import batchify, count_words, to_stream, window, window_count
from s2s.tasks.language_model.loading import load_language_model
from s2s.tasks.language_model.model import build_language_model
from s2s.tasks.language_model.sampling import SamplingOptions, generate_ids
from s2s.tasks.language_model.scoring import Perplexity, score_lines, stream_perplexity, total
from s2s.tasks.language_model.trainer import LanguageModelTrainer
from s2s.tasks.recipe import load_config
from s2s.tasks.registry import find_task

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "lm.toml"
INF = float("-inf")


def s2s(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", *args], input=stdin, capture_output=True, timeout=300
    )


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few steps of recipes/lm.toml on a WikiText-2 slice, trained through the CLI."""
    folder = tmp_path_factory.mktemp("lm")
    sets = [arg for item in tiny_overrides(folder / "data") for arg in ("--set", item)]
    result = s2s("train", str(RECIPE), "--out", str(folder / "run"), "-q", *sets)
    assert result.returncode == 0, result.stderr.decode()
    return folder / "run"


# -- perplexity arithmetic ---------------------------------------------------------------
def test_word_level_perplexity_divides_the_total_nll_by_words() -> None:
    # 12 subword tokens over 2 lines of 2 words each: 4 words + 2 line ends = 6 words
    assert count_words(["the cat", "", "a dog sat"]) == 2 + 1 + 0 + 1 + 3 + 1
    result = Perplexity(nll=12 * math.log(5.0), tokens=12, words=6)
    assert result.token_ppl == pytest.approx(5.0)
    assert result.word_ppl == pytest.approx(25.0)  # exp(12 ln 5 / 6)
    both = total([result, Perplexity(nll=0.0, tokens=3, words=3)])
    assert (both.tokens, both.words) == (15, 9)
    assert both.word_ppl == pytest.approx(math.exp(12 * math.log(5.0) / 9))


def uniform_model(vocab_size: int):
    """A model whose every prediction is uniform over the predictable ids."""
    config = load_config(RECIPE, ["model.embed_size=8", "model.hidden_size=8", "model.dropout=0"])
    model = build_language_model(config, vocab_size)
    with torch.no_grad():
        model.output.weight.zero_()  # tied: the embedding too
        model.output.bias.zero_()
    return model.eval()


def test_scores_of_a_uniform_model_are_hand_computable(lm_run: Path) -> None:
    from s2s.data.tokenizer import load_tokenizers

    tokenizer = load_tokenizers(lm_run, joint=True).src
    vocab = tokenizer.vocab_size
    model = uniform_model(vocab)
    per_token = math.log(vocab - 2)  # pad and bos are never predicted
    lines = ["The game was released", "", "in Japan ."]
    scores = score_lines(model, tokenizer, lines, False, torch.device("cpu"))
    for line, result in zip(lines, scores, strict=True):
        tokens = len(tokenizer.encode(line)) + 1  # and the end of line
        assert result.tokens == tokens and result.words == len(line.split()) + 1
        assert result.log_prob == pytest.approx(-tokens * per_token, rel=1e-5)
    stream = to_stream(tokenizer, lines * 10, False)
    corpus = stream_perplexity(model, stream, 2, torch.device("cpu"))
    assert corpus.token_ppl == pytest.approx(vocab - 2, rel=1e-4)
    assert corpus.tokens == 2 * (stream.tokens // 2 - 1)


def test_inference_on_the_packed_output_layer_matches_the_plain_layer_after_updates() -> None:
    """CPU inference multiplies by the output layer packed once (s2s.kernels.packed_linear):
    the same logits as the plain layer of training mode, never-predicted ids at -inf, and weights a
    fused optimiser changed (without bumping their versions) are packed again."""
    from s2s.kernels.packed_linear import packs
    from s2s.tasks.language_model.model import NEVER_PREDICTED

    config = load_config(RECIPE, ["model.embed_size=8", "model.hidden_size=8", "model.dropout=0"])
    torch.manual_seed(0)
    model = build_language_model(config, 50)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    tokens = torch.randint(3, 50, (2, 7))
    for _ in range(2):
        with torch.no_grad():
            plain, _ = model.train()(tokens)
        with torch.inference_mode():
            packed, _ = model.eval()(tokens)
        assert (model._packed_output._packed is not None) == packs(torch.float32)
        torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
        assert torch.isneginf(packed[..., list(NEVER_PREDICTED)]).all()
        model.train()
        logits, _ = model(tokens)
        logits[..., 3:].logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()


# -- TBPTT -------------------------------------------------------------------------------
def test_streams_are_contiguous_and_windows_continue_each_other() -> None:
    ids = torch.arange(103)
    grid = batchify(ids, 4)  # 4 rows of 25; the last 3 ids are dropped
    assert grid.shape == (4, 25) and torch.equal(grid.flatten(), ids[:100])
    windows = [window(grid, k, 7) for k in range(window_count(grid, 7))]
    assert [w.inputs.size(1) for w in windows] == [7, 7, 7, 3]  # 24 predictions per row
    for k, current in enumerate(windows):
        assert torch.equal(current.targets[:, :-1], current.inputs[:, 1:])
        if k + 1 < len(windows):  # batch k+1 continues batch k's text, row by row
            following = windows[k + 1]
            assert torch.equal(following.inputs[:, 0], current.targets[:, -1])
            assert torch.equal(following.inputs[:, 0], current.inputs[:, -1] + 1)


def test_hidden_state_is_carried_across_batches_and_detached(tmp_path: Path) -> None:
    config = load_config(RECIPE, tiny_overrides(tmp_path / "data"))
    trainer = LanguageModelTrainer(config, RunDir(tmp_path / "run"), quiet=True)
    model = trainer.model
    seen: list = []
    forward = model.forward

    def recording(tokens, states=None):
        seen.append(states)
        logits, finals = forward(tokens, states)
        seen.append(finals)
        return logits, finals

    model.forward = recording  # type: ignore[method-assign]
    first, second = (trainer._collate([k]) for k in (0, 1))
    trainer._batch_loss(first).backward()
    trainer._batch_loss(second).backward()  # would fail if it reached batch 0's freed graph
    start_0, final_0, start_1, _ = seen
    assert start_0 is None  # an epoch starts from zeros
    for carried, final in zip(start_1, final_0, strict=True):
        for tensor, original in zip(carried, final, strict=True):
            assert torch.equal(tensor, original)  # batch k+1 starts where batch k ended
            assert tensor.grad_fn is None and not tensor.requires_grad  # ... cut from its graph
    assert trainer._collate([0]).index == 0 and torch.equal(
        second.inputs[:, 0], first.targets[:, -1]
    )


def test_a_carried_state_equals_reading_the_two_windows_at_once(tmp_path: Path) -> None:
    config = load_config(RECIPE, [*tiny_overrides(tmp_path / "data"), "model.dropout=0"])
    trainer = LanguageModelTrainer(config, RunDir(tmp_path / "run"), quiet=True)
    model = trainer.model.eval()
    first, second = (trainer._collate([k]) for k in (0, 1))
    with torch.no_grad():
        trainer._batch_loss(first)
        split_logits, _ = model(second.inputs, trainer.train_states)
        whole, _ = model(torch.cat([first.inputs, second.inputs], dim=1))
    assert torch.allclose(split_logits, whole[:, first.inputs.size(1) :], atol=1e-5)


def test_text_splits_belong_to_language_models() -> None:
    with pytest.raises(ConfigError, match=r"model\.bidirectional = false"):
        load_config(RECIPE, ["model.bidirectional=true"])
    with pytest.raises(ConfigError, match=r"data\.train\.text: file not found.*edit that key"):
        load_config(RECIPE, ['data.train.text="nowhere.txt"'])
    with pytest.raises(ConfigError, match=r"is for task\.type = 'language_model'"):
        load_config(RECIPE, ["task.type=translation", "train.valid_decode=false"])


# -- sampling ----------------------------------------------------------------------------
def test_top_k_keeps_the_k_largest_logits() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert filter_top_k(logits, 2).tolist() == [[INF, 4.0, 3.0, INF]]
    assert filter_top_k(logits, 0).tolist() == logits.tolist()


def test_top_p_keeps_the_smallest_nucleus_holding_p() -> None:
    probs = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    logits = probs.log()
    kept = filter_top_p(logits, 0.75).isfinite().tolist()
    assert kept == [[False, True, True, False]]  # 0.5 < 0.75 <= 0.5 + 0.3
    assert filter_top_p(logits, 0.5).isfinite().tolist() == [[False, True, False, False]]
    assert filter_top_p(logits, 0.01).isfinite().sum() == 1  # the likeliest always stays
    assert filter_top_p(logits, 1.0).isfinite().all()


def test_sampling_is_seeded_and_respects_the_token_limit() -> None:
    model = build_language_model(load_config(RECIPE, ["model.hidden_size=16"]), 50)
    device = torch.device("cpu")
    options = SamplingOptions(max_tokens=7, temperature=1.5, seed=3)
    runs = [generate_ids(model, [EOS_ID, 10, 11], options, device) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2] and 1 <= len(runs[0]) <= 7
    greedy = SamplingOptions(max_tokens=5, temperature=0.0)
    assert generate_ids(model, [EOS_ID], greedy, device) == generate_ids(
        model, [EOS_ID], greedy, device
    )


# -- the commands ------------------------------------------------------------------------
def test_generate_is_reproducible_with_a_seed(lm_run: Path) -> None:
    args = ("generate", str(lm_run), "--prompt", "The game", "--max-tokens", "12")
    once, again = (s2s(*args, "--seed", "7", "--top-k", "50", "--top-p", "0.9") for _ in "ab")
    assert once.returncode == 0, once.stderr.decode()
    assert once.stdout == again.stdout
    text = once.stdout.decode()
    assert text.count("\n") == 1 and text.startswith("The game")
    with pytest.raises(S2SError, match="--top-p"):
        SamplingOptions(top_p=1.5).check()


def test_generate_beam_searches_the_likeliest_continuation(lm_run: Path) -> None:
    """--beam k searches instead of sampling: no seed needed, and a beam of one is greedy."""
    args = ("generate", str(lm_run), "--prompt", "The game", "--max-tokens", "12")
    beam, again = (s2s(*args, "--beam", "4") for _ in "ab")
    assert beam.returncode == 0, beam.stderr.decode()
    assert beam.stdout == again.stdout and beam.stdout.decode().startswith("The game")
    assert s2s(*args, "--beam", "1").stdout == s2s(*args, "--temperature", "0").stdout


def test_score_prints_one_row_per_line_and_a_total(lm_run: Path) -> None:
    lines = ["The game was released in Japan .", "", "It is a river ."]
    result = s2s("score", str(lm_run), stdin=("\n".join(lines) + "\n").encode())
    assert result.returncode == 0, result.stderr.decode()
    rows = [row.split("\t") for row in result.stdout.decode().splitlines()]
    assert len(rows) == len(lines) + 1
    assert [row[0] for row in rows] == ["1", "2", "3", "total"]
    for _label, log_prob, ppl, _tokens, words in rows:
        assert float(ppl) == pytest.approx(math.exp(-float(log_prob) / int(words)), rel=1e-3)
    assert rows[1][4] == "1"  # an empty line is its end of line alone
    assert float(rows[-1][1]) == pytest.approx(sum(float(r[1]) for r in rows[:-1]), abs=1e-3)
    bad = s2s("score", str(lm_run), stdin=b"fine\n\xff\xfe\n")
    assert bad.returncode != 0
    assert bad.stderr.decode().strip() == "s2s: error: stdin: line 2 is not UTF-8 (byte 0)"


def test_evaluate_records_test_perplexity_for_info(lm_run: Path) -> None:
    result = s2s("evaluate", str(lm_run), "--split", "test")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "perplexity = " in out and "word-level perplexity = " in out
    info = s2s("info", str(lm_run))
    assert info.returncode == 0, info.stderr.decode()
    assert "eval test" in info.stdout.decode() and "word_ppl" in info.stdout.decode()
    for option in (["--beam", "5"], ["--amp", "bf16"]):  # a language model is not decoded
        refused = s2s("evaluate", str(lm_run), *option)
        assert refused.returncode != 0
        assert refused.stderr.decode().strip() == (
            "s2s: error: a language model is evaluated on a split (--split) only"
        )


def test_a_stopped_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    overrides = tiny_overrides(tmp_path / "data", steps=2)
    run = RunDir(tmp_path / "run")
    LanguageModelTrainer(load_config(RECIPE, overrides), run, quiet=True).train()
    more = [*overrides, "train.max_steps=5", "train.valid_every=5"]
    resumed = LanguageModelTrainer(load_config(RECIPE, more), run, quiet=True)
    assert resumed.progress.step == 2 and resumed.progress.batch_in_epoch == 2
    record = resumed.train()
    assert record["step"] == 5 and math.isfinite(record["valid_ppl"])


def test_average_validates_a_language_model_as_training_did(tmp_path: Path) -> None:
    """`s2s average` scores language models too: the newest checkpoint scores exactly what
    training logged for it, and the average gets the same scores, computed the same way."""
    overrides = [*tiny_overrides(tmp_path / "data", steps=4), "train.valid_every=2"]
    overrides.append("train.keep_last=2")
    run = RunDir(tmp_path / "run")
    LanguageModelTrainer(load_config(RECIPE, overrides), run, quiet=True).train()
    report = average_last(run.path, 2, None, True, "cpu", find_task=find_task)
    logged = {r["step"]: r for r in read_metrics(run.metrics_log)}[4]
    assert report.before == {key: logged[key] for key in report.before}
    assert set(report.before) == {"valid_loss", "valid_ppl", "valid_word_ppl"}
    assert set(report.after) == set(report.before)
    assert math.isfinite(report.after["valid_ppl"])
    assert report.after != report.before  # the average is another model


def test_a_language_model_run_records_its_cell_and_warns_on_another_version(
    lm_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    run = Path(shutil.copytree(lm_run, tmp_path / "run"))
    about = json.loads((run / "about.json").read_text())
    recorded = about["sessions"][-1]["cell"]
    assert recorded["distribution"] == "s2s" and recorded["options"]  # defaults included
    recorded["version"] = "0.0.1"
    (run / "about.json").write_text(json.dumps(about))
    monkeypatch.setattr(cell_record, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="s2s"):
        load_language_model(run, device="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "was trained with s2s 0.0.1" in warnings[0]
