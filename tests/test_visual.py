"""Seeing what a model does: TensorBoard scalars, learning-curve and attention pictures,
alignments for tools, the model card, checkpoint averaging, and progress output."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.core.search import GreedySearch, max_output_lengths
from s2s.errors import S2SError
from s2s.inspect.model_card import format_card, model_card
from s2s.inspect.plots import run_labels
from s2s.progress import Busy, TaskProgress, configure_logging, progress_enabled
from s2s.run.averaging import (
    average_checkpoints,
    average_state_dicts,
    prune_step_checkpoints,
    select_last,
)
from s2s.run.checkpoint import load_checkpoint, save_checkpoint
from s2s.run.metrics_log import read_metrics, task_metric
from s2s.tasks.loading import load_run
from s2s.tasks.translation.alignment import align_sentence, build_alignments, forced_attention
from s2s.tasks.translation.translator import Translator
from s2s.train.tensorboard_log import TrainingBoard

SCALARS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_second",
    "valid/loss",
    "valid/ppl",
    "valid/bleu",
}


@contextlib.contextmanager
def restored_logging():
    """The CLI configures logging for a process; put back what pytest and other tests had."""
    root, package = logging.getLogger(), logging.getLogger("s2s")
    handlers, root_level, package_level = root.handlers[:], root.level, package.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        package.setLevel(package_level)


@pytest.fixture(scope="module")
def visual_run(tmp_path_factory) -> tuple[Path, str]:
    """A tiny run validated three times (steps 4, 8, 12), logging every 2 steps, keeping
    the 3 most recent checkpoints; returns its path and what training wrote to stderr."""
    from s2s.run.directory import RunDir
    from s2s.tasks.recipe import load_config
    from s2s.tasks.translation.trainer import TranslationTrainer

    folder = tmp_path_factory.mktemp("visual")
    overrides = ["train.valid_every=4", "train.log_every=2", "train.keep_last=3"]
    config = load_config(tiny_recipe(folder, pairs=200, steps=12), overrides)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), restored_logging():
        configure_logging(quiet=False)
        TranslationTrainer(config, RunDir(folder / "run")).train()
    return folder / "run", stderr.getvalue()


def invoke(*args: str, input: str | None = None):
    with restored_logging():
        return CliRunner().invoke(app, list(args), input=input)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def check_png(path: Path, min_size: tuple[int, int], max_size: tuple[int, int]) -> None:
    """A real PNG of a sensible size that is not one flat colour."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1]
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20


# -- TensorBoard ------------------------------------------------------------------------------


def test_tensorboard_events_hold_every_scalar(visual_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = visual_run
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= SCALARS
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]
    logged = metrics(run)
    valid = events.Scalars("valid/loss")
    assert [e.step for e in valid] == [r["step"] for r in logged] == [4, 8, 12]
    for event, record in zip(valid, logged, strict=True):
        assert event.value == pytest.approx(record["valid_loss"])
    norms = [e.value for e in events.Scalars("train/grad_norm")]
    assert all(0 < norm < float("inf") for norm in norms)


def test_resumed_run_continues_its_curves(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from s2s.run.directory import RunDir
    from s2s.tasks.recipe import load_config
    from s2s.tasks.translation.trainer import TranslationTrainer

    recipe = tiny_recipe(tmp_path, pairs=100, steps=4)
    for steps in (4, 6):
        sets = [f"train.max_steps={steps}", "train.valid_every=2", "train.log_every=1"]
        TranslationTrainer(load_config(recipe, sets), RunDir(tmp_path / "run"), quiet=True).train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("valid/loss")] == [2, 4, 6]


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.closed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_board_writes_window_means_at_the_logging_interval() -> None:
    writer = FakeWriter()
    board = TrainingBoard(writer, log_every=2)
    board.add(torch.tensor(12.0), 4, torch.tensor(1.0))
    board.end_step(1, lr=0.5)
    assert writer.scalars == {}  # nothing read from the device before the interval
    board.add(torch.tensor(8.0), 6, torch.tensor(3.0))
    board.end_step(2, lr=0.25)
    assert writer.scalars["train/loss"] == [(2, pytest.approx(2.0))]  # 20 / 10 tokens
    assert writer.scalars["train/grad_norm"] == [(2, pytest.approx(2.0))]  # mean of 1, 3
    assert writer.scalars["train/lr"] == [(2, 0.25)]
    board.validation({"step": 2, "valid_loss": 1.5, "valid_ppl": 4.48, "valid_chrf": 40.0})
    assert writer.scalars["valid/chrf"] == [(2, 40.0)]
    board.add(torch.tensor(3.0), 3, torch.tensor(5.0))
    board.end_step(3, lr=0.1)
    board.close(3)  # the unfinished window is written, then the file closed
    assert writer.scalars["train/loss"][-1] == (3, pytest.approx(1.0)) and writer.closed


def test_missing_tensorboard_is_one_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with caplog.at_level(logging.WARNING, logger="s2s"):
        board = TrainingBoard.for_run(tmp_path / "tb", enabled=True, log_every=1, step=0)
    assert board.writer is None
    assert [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage()] == [
        "tensorboard is not installed, so TensorBoard logging is off "
        "(pip install 'tensorboard>=2.14', or set train.tensorboard = false)"
    ]
    board.add(torch.tensor(1.0), 1, None)
    board.end_step(1, 0.1)
    board.close(1)
    assert not (tmp_path / "tb").exists()


def test_tensorboard_switched_off_writes_nothing(tmp_path: Path) -> None:
    board = TrainingBoard.for_run(tmp_path / "tb", enabled=False, log_every=1, step=0)
    assert board.writer is None and not (tmp_path / "tb").exists()


# -- learning curves --------------------------------------------------------------------------


def test_plot_draws_learning_curves_of_several_runs(visual_run, trained_run, tmp_path) -> None:
    run, _ = visual_run
    out = tmp_path / "curves.png"
    result = invoke("plot", str(run), str(trained_run), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    check_png(out, (1000, 700), (2000, 1200))
    quiet = invoke("plot", str(run), "--out", str(tmp_path / "quiet.png"), "-q")
    assert quiet.exit_code == 0 and "wrote" not in quiet.output
    assert (tmp_path / "quiet.png").is_file()


def test_metrics_log_of_a_running_or_killed_run_is_read(tmp_path: Path, caplog) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 5, "valid_loss": 2.5, "valid_chrf": 30.1}\n{"step": 10, "valid_lo')
    with caplog.at_level(logging.WARNING, logger="s2s"):
        records = read_metrics(log)
    assert records == [{"step": 5, "valid_loss": 2.5, "valid_chrf": 30.1}]
    assert "line 2 is not JSON" in caplog.text
    assert task_metric(records) == "valid_chrf"


def test_legend_labels_use_names_unless_they_repeat() -> None:
    assert run_labels([Path("runs/a"), Path("runs/b")]) == ["a", "b"]
    assert run_labels([Path("x/run"), Path("y/run")]) == ["x/run", "y/run"]


def test_plot_errors_are_one_line(tmp_path: Path, monkeypatch) -> None:
    result = invoke("plot", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"s2s: error: {tmp_path / 'nope'}: run directory not found"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("plot", str(tmp_path))
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "pip install 'matplotlib>=3.7'" in result.stderr


# -- attention --------------------------------------------------------------------------------


def test_alignment_rows_sum_to_one_and_name_the_subwords(trained_run: Path) -> None:
    config, tokenizers, model, device = load_run(trained_run, device="cpu")
    translator = Translator(model, tokenizers, config.decode, device)
    alignment = align_sentence(translator, "A man is riding a bicycle.", beam_size=3)
    weights = torch.tensor(alignment.weights)
    assert weights.shape == (len(alignment.target), len(alignment.source))
    assert torch.allclose(weights.sum(dim=1), torch.ones(len(alignment.target)), atol=1e-5)
    assert alignment.source[:-1] == tokenizers.src.pieces(
        tokenizers.src.encode("A man is riding a bicycle.")
    )
    assert alignment.source[-1] == alignment.target[-1] == "</s>"
    assert alignment.translation == translator.translate(["A man is riding a bicycle."], 3)[0][0]


def test_forced_attention_is_what_greedy_search_saw(trained_run: Path) -> None:
    config, tokenizers, model, device = load_run(trained_run, device="cpu")
    translator = Translator(model, tokenizers, config.decode, device)
    src_ids = tokenizers.src.encode_batch(["Two dogs play in the snow.", "A girl."])
    for ids in src_ids:
        src = torch.tensor([[*ids, 3]])
        lengths = torch.tensor([len(ids) + 1])
        limit = max_output_lengths(lengths, 1.0, 3)
        tokens = GreedySearch().search(model, src, lengths, limit)[0][0].tokens
        # step the decoder as search does, keeping every step's attention
        encoded = model.encode(src, lengths)
        state, prev, seen = model.initial_state(encoded), torch.tensor([2]), []
        with torch.inference_mode():
            for token in [*tokens, 3]:
                _, state, weights = model.decode_step(prev, state, encoded)
                seen.append(weights[0])
                prev = torch.tensor([token])
        forced = forced_attention(translator, [ids], [tokens])[0]
        assert torch.allclose(forced, torch.stack(seen), atol=1e-5)


def test_align_command_draws_a_heat_map(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "align.png"
    result = invoke("align", str(trained_run), "A dog runs on the beach.", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1  # the translation, on stdout
    check_png(out, (400, 300), (4000, 4000))


def test_translate_writes_one_alignment_per_input_line(trained_run: Path, tmp_path) -> None:
    out = tmp_path / "align.jsonl"
    lines = ["A man is riding a bicycle.", "", "Two dogs play in the snow."]
    stdin = "\n".join(lines) + "\n"
    result = invoke("translate", str(trained_run), "--alignments", str(out), input=stdin)
    assert result.exit_code == 0, result.output
    translations = result.stdout.splitlines()
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == [0, 1, 2]
    assert records[1] == {"line": 1, "source": [], "target": [], "translation": "", "attention": []}
    for record, translation in zip(records, translations, strict=True):
        assert record["translation"] == translation
        if record["source"]:
            assert len(record["attention"]) == len(record["target"])
            for row in record["attention"]:
                assert len(row) == len(record["source"]) and sum(row) == pytest.approx(1, abs=1e-3)


def test_build_alignments_skips_lines_without_a_hypothesis(trained_run: Path) -> None:
    config, tokenizers, model, device = load_run(trained_run, device="cpu")
    translator = Translator(model, tokenizers, config.decode, device)
    assert build_alignments(translator, [[], [5, 6]], [[], []]) == [None, None]


# -- model card -------------------------------------------------------------------------------


def test_info_json_round_trips_and_describes_the_run(visual_run) -> None:
    run, _ = visual_run
    result = invoke("info", str(run), "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card == model_card(run)
    _, tokenizers, model, _ = load_run(run, device="cpu")
    assert card["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["model"]["cell"] == "lstm" and card["model"]["hidden_size"] == 48
    assert card["vocabulary"]["src"] == tokenizers.src.vocab_size
    assert card["data"]["train"]["pairs"] == 200 and card["data"]["valid"]["pairs"] == 40
    assert card["training"]["steps"] == 12 and card["training"]["validations"] == 3
    best = json.loads((run / "checkpoints" / "best.json").read_text())[0]
    assert card["best"]["checkpoint"] == best["file"] and card["task_metric"] == "valid_bleu"
    assert card["written_by"]["torch"] == torch.__version__
    text = invoke("info", str(run)).stdout
    assert f"{card['model']['parameters']:,}" in text and "12 steps" in text


def test_info_shows_evaluate_scores(visual_run) -> None:
    run, _ = visual_run
    result = invoke("evaluate", str(run), "--split", "test", "--beam", "1")
    assert result.exit_code == 0, result.output
    bleu = float(result.stdout.split()[2])  # "BLEU = 1.23 ..."
    test = model_card(run)["test"]["test"]
    assert test["beam"] == 1 and test["scores"]["BLEU"] == pytest.approx(bleu, abs=0.01)
    assert "eval test" in format_card(model_card(run))


def test_info_on_a_missing_run_is_one_line(tmp_path: Path) -> None:
    result = invoke("info", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"s2s: error: {tmp_path / 'nope'}: run directory not found"


# -- averaging --------------------------------------------------------------------------------


def test_average_of_two_checkpoints_is_the_elementwise_mean(visual_run, tmp_path) -> None:
    run, _ = visual_run
    first, second = select_last(run / "checkpoints", 2)
    out = average_checkpoints([first, second], tmp_path / "avg.pt")
    a, b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    averaged = load_checkpoint(out)["model"]
    assert set(averaged) == set(a)
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=1e-7), name
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_average_state_dicts_by_hand() -> None:
    states = [
        {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(1)},
        {"w": torch.tensor([2.0, 5.0]), "n": torch.tensor(2)},
        {"w": torch.tensor([6.0, 7.0]), "n": torch.tensor(3)},
    ]
    averaged = average_state_dicts(states)
    assert torch.equal(averaged["w"], torch.tensor([3.0, 5.0]))
    assert averaged["n"].item() == 3  # integer tensors are taken from the newest
    with pytest.raises(S2SError, match="different tensors"):
        average_state_dicts([{"w": torch.ones(1)}, {"v": torch.ones(1)}])
    with pytest.raises(S2SError, match="shape"):
        average_state_dicts([{"w": torch.ones(1)}, {"w": torch.ones(2)}])


def test_keep_last_keeps_the_recent_step_checkpoints(visual_run) -> None:
    run, _ = visual_run
    names = {p.name for p in (run / "checkpoints").glob("step-*.pt")}
    assert {"step-4.pt", "step-8.pt", "step-12.pt"} <= names


def test_pruning_after_each_save_grows_to_keep_last_checkpoints(tmp_path: Path) -> None:
    """As training saves: one checkpoint per validation, pruned each time, the best being
    the first. Fewer than keep_last on disk must never shrink the recent ones."""
    for step in range(1, 9):
        save_checkpoint(tmp_path / f"step-{step}.pt", {"model": {}})
        prune_step_checkpoints(tmp_path, ["step-1.pt"], keep_last=5)
    left = sorted(int(p.stem.removeprefix("step-")) for p in tmp_path.glob("step-*.pt"))
    assert left == [1, 4, 5, 6, 7, 8]


def test_pruning_keeps_best_and_most_recent(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        save_checkpoint(tmp_path / f"step-{step}.pt", {"model": {}})
    (tmp_path / "averaged-last-2.pt").write_bytes(b"not a step checkpoint")
    prune_step_checkpoints(tmp_path, ["step-2.pt"], keep_last=2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["averaged-last-2.pt", "step-2.pt", "step-6.pt", "step-8.pt"]
    prune_step_checkpoints(tmp_path, ["step-8.pt"], keep_last=0)
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == ["step-8.pt"]


def test_average_command_reports_scores_before_and_after(visual_run) -> None:
    run, _ = visual_run
    result = invoke("average", str(run), "--last", "2", "-q")
    assert result.exit_code == 0, result.output
    out = run / "checkpoints" / "averaged-last-2.pt"
    assert load_checkpoint(out)["averaged_from"] == ["step-8.pt", "step-12.pt"]
    lines = result.stdout.splitlines()
    newest = metrics(run)[-1]
    assert lines[1] == (
        f"validation before (step-12.pt): loss {newest['valid_loss']}, "
        f"ppl {newest['valid_ppl']}, bleu {newest['valid_bleu']}"
    )  # scored exactly as training scored it
    assert lines[2].startswith("validation after (averaged-last-2.pt): loss ")
    translated = invoke("translate", str(run), "--checkpoint", str(out), input="A dog.\n")
    assert translated.exit_code == 0 and translated.stdout.count("\n") == 1


def test_average_needs_enough_checkpoints(visual_run) -> None:
    run, _ = visual_run
    result = invoke("average", str(run), "--last", "9")
    assert result.exit_code == 1
    assert "train.keep_last = 9" in result.stderr and len(result.stderr.splitlines()) == 1


# -- progress ---------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with TaskProgress("decoding", total=10, unit="lines", enabled=True, stream=stream, interval=0):
        pass  # nothing done: only the summary line
    assert len(stream.getvalue().splitlines()) == 1
    assert stream.getvalue().startswith("s2s: decoding: done in ")
    stream = io.StringIO()
    with TaskProgress("decoding", 10, "lines", enabled=True, stream=stream, interval=0) as bar:
        bar.update(3)
        bar.advance_to(10)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("s2s: decoding: 3/10 lines (30%)")
    assert lines[-1].startswith("s2s: decoding: done, 10 lines in ")
    assert "\r" not in stream.getvalue()


def test_progress_is_a_bar_on_a_terminal_and_silent_when_quiet() -> None:
    terminal = Terminal()
    with TaskProgress("decoding", 4, "lines", enabled=True, stream=terminal) as bar:
        bar.update(4)
    assert "\r" in terminal.getvalue() and "100%" in terminal.getvalue()
    quiet = Terminal()
    with TaskProgress("decoding", 4, "lines", enabled=False, stream=quiet) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""


def test_busy_reports_while_work_runs() -> None:
    import time

    stream = io.StringIO()
    with Busy("training the tokenizer", enabled=True, stream=stream, interval=0.05):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "s2s: training the tokenizer: started"
    assert any("still running" in line for line in lines)
    assert lines[-1].startswith("s2s: training the tokenizer: done in ")


def test_quiet_and_verbose_set_the_s2s_level_only() -> None:
    with restored_logging():
        configure_logging(quiet=True)
        assert not progress_enabled()
        configure_logging(verbose=True)
        assert logging.getLogger("s2s.data.corpus").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("matplotlib").isEnabledFor(logging.DEBUG)
        configure_logging()
        assert progress_enabled() and not logging.getLogger("s2s").isEnabledFor(logging.DEBUG)


def test_training_reports_each_long_step_in_plain_lines(visual_run) -> None:
    _, stderr = visual_run
    assert "s2s: training the unigram tokenizer (300 pieces): done in " in stderr
    assert "s2s: tokenizing data.train: done, 200 pairs in " in stderr
    assert "epoch 1 step 2: loss " in stderr and " grad norm " in stderr
    assert "validation at step 12: " in stderr
    assert "\r" not in stderr


def test_evaluate_and_translate_progress_follow_quiet(trained_run: Path) -> None:
    loud = invoke("evaluate", str(trained_run), "--beam", "1")
    assert loud.exit_code == 0 and "s2s: translating test: done, 40 sentences in " in loud.stderr
    quiet = invoke("evaluate", str(trained_run), "--beam", "1", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    translated = invoke("translate", str(trained_run), "--beam", "1", input="A dog.\n\nA cat.\n")
    assert "s2s: translating: done, 3 lines in " in translated.stderr
    assert invoke("translate", str(trained_run), "-q", input="A dog.\n").stderr == ""


def test_quiet_training_writes_nothing_to_stderr(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, pairs=100, steps=2)
    result = invoke("train", str(recipe), "--out", str(tmp_path / "run"), "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
