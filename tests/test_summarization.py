"""Summarisation: the copy mechanism, ROUGE with several references, JSON-lines corpora
with list fields, and the recipe end to end on a slice of the real data."""

from __future__ import annotations

import json
import lzma
import random
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import Result
from helpers import search_step_log_probs
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ModelConfig, SplitConfig
from s2s.core.cell_registry import cell_factory
from s2s.core.copy_attention import copy_distribution
from s2s.core.decoding import select_rows
from s2s.core.search import BeamSearch, GreedySearch, max_output_lengths
from s2s.core.seq2seq import Seq2Seq
from s2s.data.batching import collate
from s2s.data.corpus import load_parallel
from s2s.errors import ConfigError, S2SError
from s2s.run.weights import load_weights
from s2s.tasks.recipe import load_config
from s2s.tasks.summarization.rouge import require_rouge, rouge, rouge_scores
from s2s.train.trainer import label_smoothed_loss

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "summarization.toml"
DEBIAN = ROOT / "recipes" / "data" / "debian-descriptions"
SCITLDR = ROOT / "recipes" / "data" / "scitldr-a"


def make_model(vocab: int = 40, **options) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(embed_size=16, hidden_size=24, dropout=0.0, **options)
    return Seq2Seq(config, cell_factory("lstm", {}), vocab, vocab, 0, share_vocab=True)


# -- the copy mechanism -----------------------------------------------------------------


def test_copy_distribution_sums_attention_onto_repeated_ids() -> None:
    weights = torch.tensor([[[0.5, 0.25, 0.25, 0.0]]])  # B=1, T=1, S=4 (last is padding)
    src_ids = torch.tensor([[7, 9, 7, 0]])
    copied = copy_distribution(weights, src_ids, 10)
    assert copied[0, 0, 7] == 0.75 and copied[0, 0, 9] == 0.25 and copied[0, 0, 0] == 0.0
    assert float(copied.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("input_feeding", [False, True])
def test_copy_output_is_normalised_and_matches_stepwise_decoding(input_feeding: bool) -> None:
    """With copy on, forward gives log-probabilities: cross-entropy (what the trainer and
    validation compute) equals their negative log-likelihood, and search sees the same."""
    model = make_model(copy=True, input_feeding=input_feeding).eval()
    batch = collate([0, 1], [[5, 6, 7, 30], [9, 8]], [[8, 9, 10, 11], [30, 5]])
    with torch.no_grad():
        log_probs = model(batch.src, batch.src_lengths, batch.tgt_in)
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 5))
        flat, gold = log_probs.reshape(-1, 40), batch.tgt_out.reshape(-1)
        cross_entropy = F.cross_entropy(flat, gold, ignore_index=0, reduction="sum")
        nll = F.nll_loss(flat, gold, ignore_index=0, reduction="sum")
        torch.testing.assert_close(cross_entropy, nll)
        stepwise = search_step_log_probs(model, batch)
    torch.testing.assert_close(stepwise, log_probs, atol=1e-5, rtol=1e-5)


def test_copy_gradients_are_finite_with_smoothing_and_padding() -> None:
    model = make_model(copy=True).train()
    batch = collate([0, 1], [[5, 6, 7, 30, 31, 32], [9]], [[8, 9], [30, 5, 6]])
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    label_smoothed_loss(logits, batch.tgt_out, 0.1).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert float(model.copy_switch.gate.weight.grad.abs().sum()) > 0


def test_beam_search_reorders_the_source_ids_copying_reads() -> None:
    model = make_model(copy=True).eval()
    batch = collate([0, 1], [[5, 6, 7], [9, 8, 30, 31]])
    encoded = model.encode(batch.src, batch.src_lengths)
    assert torch.equal(select_rows(encoded, torch.tensor([1, 0])).src_ids[0], encoded.src_ids[1])
    limits = max_output_lengths(batch.src_lengths, 1.0, 2)
    both = BeamSearch(3).search(model, batch.src, batch.src_lengths, limits)
    alone = collate([0], [[9, 8, 30, 31]])
    single = BeamSearch(3).search(model, alone.src, alone.src_lengths, limits[1:])
    assert both[1][0].tokens == single[0][0].tokens


# A synthetic copy task over a word-level joint vocabulary (ids stand for words): the source
# is filler words with "name X" somewhere, the summary is X. Training uses SEEN names only;
# the UNSEEN ones are in the vocabulary but never in a training target.
FILLERS, MARKER = list(range(4, 24)), 24
SEEN, UNSEEN = list(range(25, 325)), list(range(325, 345))
VOCAB = 345


def name_example(rng: random.Random, names: list[int]) -> tuple[list[int], list[int]]:
    src = rng.choices(FILLERS, k=rng.randint(4, 8))
    name = rng.choice(names)
    at = rng.randint(0, len(src))
    src[at:at] = [MARKER, name]
    return src, [name]


def train_name_copier(copy: bool, steps: int = 200) -> Seq2Seq:
    torch.manual_seed(0)
    rng = random.Random(0)
    config = ModelConfig(
        embed_size=32,
        hidden_size=64,
        encoder_layers=1,
        decoder_layers=1,
        dropout=0.0,
        tie_embeddings=False,  # no output row learns from input embeddings
        copy=copy,
    )
    model = Seq2Seq(config, cell_factory("lstm", {}), VOCAB, VOCAB, 0, share_vocab=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        pairs = [name_example(rng, SEEN) for _ in range(32)]
        batch = collate(list(range(32)), [s for s, _ in pairs], [t for _, t in pairs])
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = label_smoothed_loss(logits, batch.tgt_out, 0.0) / batch.num_tgt_tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def unseen_name_outputs(model: Seq2Seq) -> tuple[float, int]:
    """Exact-match rate on sources naming UNSEEN names, and outputs holding any of them."""
    rng = random.Random(1)
    pairs = [name_example(rng, UNSEEN) for _ in range(100)]
    batch = collate(list(range(100)), [s for s, _ in pairs])
    limits = max_output_lengths(batch.src_lengths, 1.0, 2)
    hyps = [h for [h] in GreedySearch().search(model, batch.src, batch.src_lengths, limits)]
    exact = sum(h.tokens == t for h, (_, t) in zip(hyps, pairs, strict=True)) / len(pairs)
    holding = sum(any(token in UNSEEN for token in h.tokens) for h in hyps)
    return exact, holding


def test_copy_reproduces_source_tokens_never_seen_in_a_training_target() -> None:
    torch.set_num_threads(1)
    exact, _ = unseen_name_outputs(train_name_copier(copy=True))
    assert exact >= 0.9
    exact, holding = unseen_name_outputs(train_name_copier(copy=False))
    assert exact == 0.0 and holding == 0


def test_copy_needs_a_joint_vocabulary() -> None:
    with pytest.raises(ConfigError, match=r"model.copy = true needs tokenizer.joint = true"):
        load_config(RECIPE, ["tokenizer.joint=false"])


def test_a_checkpoint_without_copy_still_loads() -> None:
    """Copy parameters exist only with copy on: older checkpoints load into copy-off models
    unchanged, and a copy-on model names what the old checkpoint lacks."""
    old = make_model().state_dict()
    assert not any(name.startswith("copy_switch") for name in old)
    load_weights(make_model(), old, Path("old.pt"))
    with pytest.raises(S2SError, match=r"missing .*copy_switch"):
        load_weights(make_model(copy=True), old, Path("old.pt"))


def test_max_source_length_cuts_what_the_encoder_reads() -> None:
    model = make_model(max_source_length=3).eval()
    long, short = collate([0], [[5, 6, 7, 8, 9]]), collate([0], [[5, 6, 7]])
    with torch.no_grad():
        cut = model.encode(long.src, long.src_lengths)
        alone = model.encode(short.src[:, :3], torch.tensor([3]))
    assert cut.memory.shape[1] == 3
    torch.testing.assert_close(cut.memory, alone.memory)


# -- ROUGE and corpora ------------------------------------------------------------------


def test_rouge_takes_the_best_reference_per_document_then_the_mean() -> None:
    hypotheses = ["the cat sat on the mat", "completely different words"]
    references = [["a dog barked", "the cat sat on the mat"], ["the cat sat on the mat"]]
    scores = rouge(hypotheses, references)
    assert scores["ROUGE-1"] == pytest.approx(50.0)
    assert scores["ROUGE-L"] == pytest.approx(50.0)
    # stemming: "running dogs" matches "run dog"
    assert rouge(["running dogs"], [["run dog"]])["ROUGE-1"] == pytest.approx(100.0)
    names = [s.name for s in rouge_scores(["a b"], [["a b", "c"]])]
    assert names == ["ROUGE-1", "ROUGE-2", "ROUGE-L"]
    with pytest.raises(S2SError, match="no reference"):
        rouge(["x"], [[]])


def test_missing_rouge_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # import fails as if not installed
    with pytest.raises(S2SError, match=r"pip install 's2s\[summarization\]'"):
        require_rouge()


def write_jsonl_xz(path: Path, records: list[dict]) -> Path:
    with lzma.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return path


def test_jsonl_xz_lists_become_joined_sources_and_several_references(tmp_path: Path) -> None:
    path = write_jsonl_xz(
        tmp_path / "t.jsonl.xz",
        [
            {"source": ["One.", "Two."], "target": ["first ref", "second ref"]},
            {"source": ["Three."], "target": ["only ref"]},
        ],
    )
    text = load_parallel(SplitConfig(path=path, src_field="source", tgt_field="target"), "t")
    assert text.src == ["One. Two.", "Three."]
    assert text.tgt == ["first ref", "only ref"]
    assert text.all_references() == [["first ref", "second ref"], ["only ref"]]
    bad = write_jsonl_xz(tmp_path / "b.jsonl.xz", [{"source": "x", "target": []}])
    with pytest.raises(S2SError, match="'target' is not text"):
        load_parallel(SplitConfig(path=bad, src_field="source", tgt_field="target"), "b")


# -- the recipe end to end on a slice of the real data ----------------------------------


def slice_jsonl_xz(source: Path, target: Path, count: int) -> Path:
    with lzma.open(source, "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(count)]
    with lzma.open(target, "wt", encoding="utf-8") as handle:
        handle.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
    return target


def s2s(*args: str, stdin: str | None = None) -> Result:
    """Run the CLI in this process (starting Python and torch again per command would
    take most of this file's time budget)."""
    return CliRunner().invoke(app, list(args), input=stdin)


def test_recipe_trains_summarises_and_evaluates_with_rouge(tmp_path: Path) -> None:
    data = {
        "train": slice_jsonl_xz(DEBIAN / "train.jsonl.xz", tmp_path / "train.jsonl.xz", 300),
        "valid": slice_jsonl_xz(DEBIAN / "valid.jsonl.xz", tmp_path / "valid.jsonl.xz", 20),
        "test": slice_jsonl_xz(DEBIAN / "test.jsonl.xz", tmp_path / "test.jsonl.xz", 12),
        "scitldr": slice_jsonl_xz(SCITLDR / "test.jsonl.xz", tmp_path / "sci.jsonl.xz", 6),
    }
    small = [
        "tokenizer.vocab_size=500",
        "model.embed_size=32",
        "model.hidden_size=32",
        "model.max_source_length=40",
        "train.max_tokens=1200",
        "train.max_steps=4",
        "train.valid_every=2",
        "train.keep_last=2",
        "train.warmup_steps=2",
        "train.threads=1",
        "train.tensorboard=false",
        "decode.beam_size=2",
    ]
    overrides = [f"data.{name}.path={path}" for name, path in data.items()] + small
    run = tmp_path / "run"
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = s2s("train", str(RECIPE), "--out", str(run), "-q", *sets)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"valid_rouge_l", "valid_rouge_1", "valid_rouge_2"} <= set(records[0])

    with lzma.open(data["test"], "rt", encoding="utf-8") as handle:
        documents = [json.loads(line)["document"].replace("\n", " ") for line in handle][:4]
    stdin = "\n".join([documents[0], "", *documents[1:]]) + "\n"
    result = s2s("translate", str(run), "-q", stdin=stdin)
    assert result.exit_code == 0, result.output
    summaries = result.stdout.split("\n")
    assert summaries[-1] == "" and len(summaries) - 1 == 5 and summaries[1] == ""

    for split in ("test", "scitldr"):
        result = s2s("evaluate", str(run), "--split", split, "-q")
        assert result.exit_code == 0, result.output
        printed = result.stdout
        assert all(f"ROUGE-{n} = " in printed for n in ("1", "2", "L")), printed
    assert "max over up to" in printed  # SciTLDR has several references per paper
    recorded = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [r["split"] for r in recorded] == ["test", "scitldr"]
    assert set(recorded[0]["scores"]) == {"ROUGE-1", "ROUGE-2", "ROUGE-L"}

    result = s2s("average", str(run), "--last", "2", "-q")  # scores the average with ROUGE
    assert result.exit_code == 0, result.output
    assert "rouge_l" in result.stdout and "bleu" not in result.stdout, result.stdout
