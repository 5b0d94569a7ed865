"""The benchmark harness (tools/bench.py) runs end to end on a tiny model and reports every
number it promises; the peer preset builds the peers' model. No timing is judged here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import ROOT, tiny_recipe, write_lines

sys.path.insert(0, str(ROOT / "tools"))

import bench
import bench_cells

TINY_CELLS = "--batch 4 --length 5 --input-size 8 --hidden-size 8 --step-batch 4 --steps 2 "
TINY_CELLS += "--repeats 1 --warmup 0"


def run_bench(tmp_path: Path, *extra: str) -> dict:
    recipe = tiny_recipe(tmp_path / "data", pairs=200)
    out = tmp_path / "bench.json"
    argv = ["--recipe", str(recipe), "--threads", "1", "--json", str(out), *extra]
    assert bench.main(argv) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_all_parts_report_positive_numbers(tmp_path, capsys):
    results = run_bench(
        tmp_path,
        *("--steps", "4", "--warmup", "1", "--window", "2", "--decode-train-steps", "6"),
        *("--sentences", "20", "--repeats", "1", "--decode-batch-sentences", "8"),
        *("--cells", "lstm", "--cell-args", TINY_CELLS),
    )
    machine = results["machine"]
    assert machine["torch"] and machine["cpu"] and machine["threads"] == 1

    train = results["train"]
    for key in ("tokens_per_second", "window_median_tokens_per_second", "steps_per_second"):
        assert train[key] > 0
    assert train["timed_steps"] == 4 and train["target_tokens"] > 0
    assert train["peak_memory_mib"] is not None and train["peak_memory_mib"] >= 0
    assert train["memory_measure"]

    decode = results["decode"]
    assert decode["sentences"] == 20 and "6 steps" in decode["model"]
    combos = {(row["beam"], row["batching"]) for row in decode["rows"]}
    assert combos == {
        (1, "decode.batch_tokens = 6000"),
        (5, "decode.batch_tokens = 6000"),
        (1, "8 sentences"),
        (5, "8 sentences"),
    }
    for row in decode["rows"]:
        assert row["sentences_per_second"] > 0 and row["bleu"] >= 0
        assert row["first_run_sentences_per_second"] > 0

    rows = {row["cell"]: row for row in results["cells"]["rows"]}
    assert rows["lstm"]["forward_ms"] > 0 and rows["torch.nn.LSTM"]["step_ms"] > 0

    printed = capsys.readouterr().out
    assert "target tok/s" in printed and "8 sentences" in printed and "1st run" in printed
    assert "machine | torch | threads | train tok/s | peak mem" in printed
    assert printed.count("\n| ") == 1  # the docs/performance.md row


def test_sentence_batches_hold_exactly_that_many_sentences(tmp_path):
    """The peers batch by sentence count; the harness matches it exactly, not on average."""
    results = run_bench(
        tmp_path, "--only", "train", "--batch-sentences", "8", "--steps", "3", "--warmup", "0"
    )
    assert results["train"]["mean_sentences_per_batch"] == 8.0
    assert results["train"]["train"]["batching"] == "8 sentences"


def test_peer_preset_builds_the_peers_model(tmp_path):
    from s2s.tasks.recipe import load_config

    data = tmp_path / "peer"
    data.mkdir()
    for split in ("train", "val", "test"):
        write_lines(data / f"{split}.src", ["ein hund läuft ."])
        write_lines(data / f"{split}.tgt", ["a dog runs ."])
    config = load_config(bench.DEFAULT_RECIPE, bench.peer_overrides(data))
    model, train, tokenizer = config.model, config.train, config.tokenizer
    assert (model.encoder_layers, model.decoder_layers, model.hidden_size) == (1, 1, 512)
    assert model.bidirectional and model.input_feeding and not model.tie_embeddings
    assert (model.attention, model.dropout, model.embed_size) == ("general", 0.2, 256)
    assert (tokenizer.model_type, tokenizer.joint, tokenizer.vocab_size) == ("word", False, 8000)
    assert (train.lr, train.weight_decay, train.schedule, train.label_smoothing) == (
        0.001,
        0.0,
        "constant",
        0.0,
    )
    assert config.data["test"].src == (data / "test.src").resolve()


def test_missing_peer_data_is_a_one_line_error(tmp_path, capsys):
    code = bench.main(["--preset", "peers", "--peer-data", str(tmp_path), "--only", "train"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("bench: --peer-data") and "train.src not found" in err
    assert "\n" not in err


def test_unknown_part_is_rejected(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--only", "train,speed"])
    assert stop.value.code != 0


def test_a_json_path_that_cannot_be_written_stops_before_measuring(tmp_path, capsys):
    """Checked when the arguments are read: a typo must not throw away a long run."""
    missing_folder = tmp_path / "no" / "b.json"
    for where, message in (
        (missing_folder, f"{missing_folder}: its folder does not exist"),
        (tmp_path, f"{tmp_path} is a folder, not a file"),
    ):
        with pytest.raises(SystemExit) as stop:
            bench.main(["--only", "cells", "--json", str(where)])
        assert stop.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].endswith(f"error: argument --json: {message}")


def test_decoding_a_run_takes_the_decode_keys_of_set(tmp_path, trained_run):
    """--set decode.KEY=VALUE reaches a saved run's decoding, as s2s translate --set does,
    and every decoding row says which stopping rule and length penalty it ran with."""
    args = ["--only", "decode", "--run", str(trained_run), "--sentences", "5", "--repeats", "1"]
    overrides = ["--set", "decode.stopping=early", "--set", "decode.length_penalty=0.5"]
    rows = run_bench(tmp_path, *args, "--beams", "2", *overrides)["decode"]["rows"]
    assert rows and all((r["stopping"], r["length_penalty"]) == ("early", 0.5) for r in rows)


def test_layer_flops_count_the_packed_layers_of_a_decoding_pass(trained_run):
    """tools/bench_decode.py --layer-flops: every packed layer of the model's search step
    is counted, whole rows at a time, and the counting is undone after the pass."""
    import bench_decode

    from s2s.kernels import packed_linear
    from s2s.tasks.loading import load_run
    from s2s.tasks.translation.translator import Translator

    config, tokenizers, model, device = load_run(trained_run, device="cpu")
    translator = Translator(model, tokenizers, config.decode, device)
    lines = ["a man is riding a bicycle .", "two dogs play in the snow ."]
    original = packed_linear._padded_linear
    counted = bench_decode.packed_layer_flops(translator, lines, beam=2)
    assert packed_linear._padded_linear is original
    output = f"{model.output.in_features}x{model.output.out_features}"
    assert output in counted["layers"]
    for name, layer in counted["layers"].items():
        size_in, size_out = (int(n) for n in name.split("x"))
        rows, partial = divmod(layer["flop"], 2 * size_in * size_out)
        assert rows >= 1 and partial == 0 and layer["seconds"] > 0, name
    assert counted["pass_seconds"] >= sum(layer["seconds"] for layer in counted["layers"].values())


def test_clip_benchmark_times_both_ways_on_the_peer_model(tmp_path, capsys):
    """tools/bench_clip.py builds the peer model without data and times clipping before
    the fused step and inside it."""
    import bench_clip

    model, train = bench_clip.peer_model_and_training()
    assert (model.output.in_features, model.output.out_features) == (512, 8000)
    assert model.config.input_feeding and train.clip_norm == 5.0
    out = tmp_path / "clip.json"
    bench_clip.main(["--rounds", "1", "--steps", "1", "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    for way in ("clip first", "clip in step"):
        assert 0 < result[way]["min_ms"] <= result[way]["median_ms"]
    assert "clip in step" in capsys.readouterr().out


def test_gate_benchmark_checks_the_cells_update_against_tanh(tmp_path):
    """tools/bench_gates.py times the built-in LSTM's decoding gate update against the
    same update with PyTorch's tanh, and reports how far apart their results are."""
    import bench_gates

    out = tmp_path / "gates.json"
    bench_gates.main(
        [
            "--rows",
            "3",
            "17",
            "--hidden-size",
            "8",
            "--repeats",
            "2",
            "--rounds",
            "1",
            "--json",
            str(out),
        ]
    )
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert [r["rows"] for r in rows] == [3, 17]
    for r in rows:
        assert r["max_abs_difference"] < 1e-6
        assert all(r[f"{way}_us"] > 0 for way in ("tanh_alone", "update_sigmoid"))


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("lstm.proj_sze=2", "--option: lstm.proj_sze: unknown option for cell 'lstm'"),
        ("lstm.proj_size=true", "--option: lstm.proj_size: cell 'lstm' expects int"),
        ("lstm.proj_size=-1", "--option: "),
    ],
)
def test_a_bad_cell_option_is_one_line_not_a_traceback(option: str, expected: str) -> None:
    args = bench_cells.parse_args(["--cells", "lstm", "--option", option, *TINY_CELLS.split()])
    with pytest.raises(SystemExit) as stopped:
        bench_cells.run_cells(args)
    message = str(stopped.value.code)
    assert message.startswith(expected) and "\n" not in message


def test_encoder_group_benchmark_reports_the_cost_model_and_both_ways(tmp_path):
    """tools/bench_encoder_groups.py derives the length groups' constants and times
    batches whole and grouped, in file order and sorted."""
    import bench_encoder_groups

    sources = tmp_path / "sources.txt"
    sources.write_text("".join(("a " * n).strip() + "\n" for n in [2, 30, 3, 28] * 10))
    out = tmp_path / "groups.json"
    result = bench_encoder_groups.main(
        [
            *("--sources", str(sources), "--batches", "20", "--embed-size", "8"),
            *("--hidden-size", "8", "--layers", "1", "--repeats", "1", "--rounds", "1"),
            *("--json", str(out)),
        ]
    )
    assert json.loads(out.read_text(encoding="utf-8")) == result
    assert result["sentences"] == 40 and result["costs"]["row_step_ms"] != 0
    file_order, ranked = result["batches"]
    assert (file_order["order"], ranked["order"]) == ("file order", "sorted")
    assert ranked["groups_per_batch"] <= file_order["groups_per_batch"]
    assert all(row[way] > 0 for row in result["batches"] for way in ("whole_s", "grouped_s"))


def test_serve_benchmark_loads_a_real_server_and_compares_with_translate(trained_run, tmp_path):
    """tools/bench_serve.py times `s2s translate`, then sends the same sentences to `s2s
    serve` from each number of clients: every sentence answered, as translate answers it."""
    import bench_serve

    out = tmp_path / "serve.json"
    summary = bench_serve.main(
        [
            *(str(trained_run), "--sentences", "12", "--clients", "1", "3"),
            *("--threads", "1", "--max-seconds", "60", "--json", str(out)),
        ]
    )
    written = json.loads(out.read_text(encoding="utf-8"))
    assert [level["sentences_per_s"] for level in written["levels"]] == [
        level["sentences_per_s"] for level in summary["levels"]
    ]
    assert written["conditions"]["amp"] == "off"
    for clients, level in zip([1, 3], summary["levels"], strict=True):
        assert (level["clients"], level["requests"], level["errors"]) == (clients, 12, 0)
        assert level["same_output"] == 12
        assert 0 < level["p50_ms"] <= level["p99_ms"]
