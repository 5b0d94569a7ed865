"""`s2s export` to ONNX and `s2s translate` / `s2s generate` on the exported directory
(s2s.exported): the same tokens as the PyTorch run (greedy, beam, n-best), for every
built-in cell, for copy models and language models, in a process where torch cannot be
imported; a cell whose step does not trace is refused naming it; int8 graphs; errors."""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import onnx
import pytest
from helpers import (
    ROOT,
    add_distribution,
    multi30k_lines,
    run_without_torch,
    tiny_recipe,
    without_torch,
    write_lines,
)
from typer.testing import CliRunner

from s2s.cli import app
from s2s.errors import S2SError
from s2s.export.onnx_export import export_run
from s2s.exported.language_model import ExportedLanguageModel
from s2s.exported.translator import ExportedTranslator
from s2s.run.directory import RunDir
from s2s.tasks.language_model.loading import load_language_model
from s2s.tasks.language_model.sampling import SamplingOptions, generate_text
from s2s.tasks.loading import load_run
from s2s.tasks.recipe import load_config
from s2s.tasks.registry import find_task
from s2s.tasks.translation.trainer import TranslationTrainer
from s2s.tasks.translation.translator import Translator

LINES = multi30k_lines("test_2016_flickr.en.gz", 60)
# N(0, 1) embeddings: after two steps the outputs still differ from line to line (a tiny
# model trained longer says nothing at all), so equal outputs are a real check.
TRAIN = ["model.init=pytorch"]


def train_run(folder: Path, *overrides: str, steps: int = 2) -> Path:
    config = load_config(tiny_recipe(folder, pairs=200, steps=steps), [*TRAIN, *overrides])
    run = RunDir(folder / "run")
    TranslationTrainer(config, run, quiet=True).train()
    return run.path


def torch_translations(run: Path, lines: list[str], beam: int, nbest: int = 1):
    config, tokenizers, model, device = load_run(run, device="cpu")
    return Translator(model, tokenizers, config.decode, device).translate(lines, beam, nbest)


def translate_without_torch(folder: Path, source: Path, *options: str) -> list[str]:
    return without_torch("translate", str(folder), "-q", *options, stdin=source)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny LSTM run and its export through the command line."""
    folder = tmp_path_factory.mktemp("export")
    run = train_run(folder / "data")
    out = folder / "mt.onnx"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return run, out


def test_exported_model_translates_as_the_run_does_without_torch(exported, tmp_path) -> None:
    run, out = exported
    source = write_lines(tmp_path / "test.en", [*LINES[:30], "", *LINES[30:]])
    for beam in (1, 5):
        expected = [
            hyps[0] for hyps in torch_translations(run, [*LINES[:30], "", *LINES[30:]], beam)
        ]
        assert len(set(expected)) > len(LINES) // 2  # the model says different things
        assert translate_without_torch(out, source, "--beam", str(beam)) == expected
    nbest = torch_translations(run, LINES[:10], 5, nbest=3)
    rows = [f"{i} ||| {text}" for i, hyps in enumerate(nbest) for text in hyps]
    head = write_lines(tmp_path / "head.en", LINES[:10])
    assert translate_without_torch(out, head, "--beam", "5", "--nbest", "3") == rows


@pytest.mark.parametrize("cell", ["rnn", "gru", "crnn"])
def test_every_builtin_cell_exports(cell: str, tmp_path: Path) -> None:
    # crnn loops over time in Python: its encoder is exported per length bucket (16, 24),
    # and sources longer than model.max_source_length are cut as the run cuts them
    run = train_run(tmp_path / "data", f"model.cell={cell}", "model.max_source_length=24", steps=1)
    exported = export_run(run, tmp_path / "out")
    assert exported.buckets == ([16, 24] if cell == "crnn" else [])
    translator = ExportedTranslator(tmp_path / "out")
    for beam in (1, 3):
        expected = torch_translations(run, LINES[:20], beam)
        assert translator.translate(LINES[:20], beam) == expected


def test_a_summarisation_run_with_copy_and_input_feeding_exports(tmp_path: Path) -> None:
    # the copy mixture (logaddexp, s2s.export.symbolics) reads the source ids at every step
    run = train_run(
        tmp_path / "data",
        "task.type=summarization",
        "model.copy=true",
        "model.input_feeding=true",
        steps=1,
    )
    export_run(run, tmp_path / "out")
    translator = ExportedTranslator(tmp_path / "out")
    for beam in (1, 3):
        assert translator.translate(LINES[:20], beam) == torch_translations(run, LINES[:20], beam)


def wikitext_lines(folder: Path, name: str, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with lzma.open(ROOT / "recipes" / "data" / "wikitext-2" / f"{name}.txt.xz", "rt") as handle:
        return write_lines(
            folder / f"{name}.txt", [next(handle).rstrip("\n") for _ in range(count)]
        )


@pytest.mark.parametrize("cell", ["lstm", "crnn"])
def test_a_language_model_exports_and_generates_its_greedy_tokens(
    cell: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    overrides = [
        *(f'data.{n}.text="{wikitext_lines(data, n, 200)}"' for n in ("train", "valid", "test")),
        *("tokenizer.vocab_size=300", "model.embed_size=24", "model.hidden_size=24"),
        *("train.bptt=8", "train.streams=4", "train.max_steps=2", "train.valid_every=2"),
        *("train.tensorboard=false", "train.threads=1", f"model.cell={cell}"),
        "train.lr=0.00001",  # near its start: the greedy continuation is not an empty line
    ]
    config = load_config(ROOT / "recipes" / "lm.toml", overrides)
    run = RunDir(tmp_path / "run")
    find_task(config.task.type).make_trainer(config, run, quiet=True).train()
    assert export_run(run.path, tmp_path / "lm.onnx").files[0] == "decoder_step.onnx"
    model = ExportedLanguageModel(tmp_path / "lm.onnx")
    _, tokenizer, language_model, device = load_language_model(run.path, device="cpu")
    greedy = SamplingOptions(max_tokens=12, temperature=0.0)
    for prompt in ("The game", "In 1990 the", ""):
        expected = generate_text(language_model, tokenizer, prompt, False, greedy, device)[0]
        assert len(expected) > len(prompt)  # a continuation, not an empty line
        assert model.generate(prompt, greedy) == expected
    options = ("--prompt", "The game", "--temperature", "0", "--max-tokens", "12")
    printed = without_torch("generate", str(tmp_path / "lm.onnx"), *options)
    assert printed == [
        generate_text(language_model, tokenizer, "The game", False, greedy, device)[0]
    ]
    sampled = SamplingOptions(max_tokens=12, top_k=20, top_p=0.9, seed=3)
    assert model.generate("The game", sampled) == model.generate("The game", sampled)
    refused = run_without_torch("generate", str(tmp_path / "lm.onnx"), "--beam", "3")
    assert refused.returncode == 1
    message = refused.stderr.decode().strip()
    assert message.endswith("an exported language model samples; --beam needs the run")


UNTRACEABLE = '''
import torch
from torch import nn
from s2s.cells import RecurrentCell


class Cell(RecurrentCell):
    """An Elman cell that sizes a tensor from a Python int: a trace fixes the batch size."""

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.input = nn.Linear(input_size, hidden_size)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)

    def step(self, x_t, state):
        bias = torch.zeros(int(x_t.shape[0]), self.hidden_size)
        h = torch.tanh(self.input(x_t) + self.recurrent(state[0]) + bias)
        return h, (h,)
'''


def test_a_cell_whose_step_does_not_trace_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_distribution(
        tmp_path / "site",
        "odd-cells",
        {"sized": "s2s_test_sized:Cell"},
        {"s2s_test_sized": UNTRACEABLE},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    run = train_run(tmp_path / "data", "model.cell=sized", steps=1)
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("s2s: error: cell 'sized': its step does not trace to ONNX")
    assert len(message.splitlines()) == 1


def test_int8_export_quantises_the_graphs_and_translates(exported, tmp_path: Path) -> None:
    run, fp32 = exported
    out = tmp_path / "int8"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "s2s-export.json").read_text())
    assert config["precision"] == "int8"
    for graph in ("encoder.onnx", "decoder_step.onnx"):
        ops = {node.op_type for node in onnx.load(out / graph).graph.node}
        assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeLSTM"}, ops
        assert (out / graph).stat().st_size < (fp32 / graph).stat().st_size
    outputs = ExportedTranslator(out).translate(["", *LINES[:20]], 3)
    assert len(outputs) == 21 and outputs[0] == [""]
    assert sum(bool(hyps[0]) for hyps in outputs) > 10


def test_export_and_exported_directory_errors_are_one_line(exported, tmp_path: Path) -> None:
    run, out = exported
    result = CliRunner().invoke(app, ["translate", str(out), "--checkpoint", "x.pt"], input="a\n")
    assert result.exit_code == 1
    assert (
        result.output.strip() == f"s2s: error: {out}: an exported model does not take --checkpoint"
    )
    result = CliRunner().invoke(app, ["translate", str(out), str(run)], input="a\n")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "s2s: error: an exported model decodes alone: no ensemble of run directories"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "s2s-export.json").write_text('{"format": "s2s-onnx", "version": 1, "task": 3}')
    with pytest.raises(S2SError, match=r"s2s-export.json: malformed export config"):
        ExportedTranslator(broken)
    shutil.copytree(out, tmp_path / "no-step")
    (tmp_path / "no-step" / "decoder_step.onnx").unlink()
    with pytest.raises(S2SError, match=r"decoder_step.onnx: cannot load the ONNX graph"):
        ExportedTranslator(tmp_path / "no-step")
    with pytest.raises(S2SError, match=r"an exported translation model, not a language model"):
        ExportedLanguageModel(out)
    constrained = shutil.copytree(run, tmp_path / "constrained")
    config = (constrained / "config.toml").read_text()
    (constrained / "config.toml").write_text(config.replace("min_length = 0", "min_length = 3"))
    with pytest.raises(S2SError, match=r"exported models do not apply decode.min_length yet"):
        export_run(constrained, tmp_path / "constrained.onnx")
    result = CliRunner().invoke(
        app, ["export", str(run), "--out", str(tmp_path / "x"), "--format", "tflite"]
    )
    assert result.exit_code == 1 and "--format 'tflite': use one of onnx" in result.output
