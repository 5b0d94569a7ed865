"""Each side of the model may use its own cell: `model.encoder_cell` / `model.decoder_cell`
(with their `_options`) default to the `model.cell` shorthand, reach every place the model
is built (training, resume, decoding, averaging, `s2s info`), and old runs read as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import add_distribution, tiny_recipe
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ModelConfig, config_to_toml
from s2s.core.cell_registry import cell_factory, load_cell_class, side_cells
from s2s.core.seq2seq import Seq2Seq
from s2s.errors import ConfigError
from s2s.run import cell_record
from s2s.run.checkpoint import load_checkpoint
from s2s.run.resume import check_resumable
from s2s.tasks.card_lines import seq2seq_layers_line
from s2s.tasks.loading import load_run
from s2s.tasks.recipe import load_config

GRU_ENCODER_LSTM_DECODER = ["--set", "model.encoder_cell=gru", "--set", "model.decoder_cell=lstm"]


def cells_of(stack: torch.nn.Module) -> set[str]:
    """The names of the cell classes in a recurrent stack."""
    return {type(cell).__name__ for layer in stack.layers for cell in layer}


def test_a_side_without_its_own_keys_uses_the_shorthand() -> None:
    config = ModelConfig(cell="lstm", cell_options={"forget_bias": 2.0}, encoder_cell="gru")
    encoder, decoder = config.side_cell("encoder"), config.side_cell("decoder")
    assert (encoder.name, encoder.options) == ("gru", {})  # lstm options are not gru's
    assert encoder.name_key == "model.encoder_cell"
    assert (decoder.name, decoder.options) == ("lstm", {"forget_bias": 2.0})
    assert (decoder.name_key, decoder.options_key) == ("model.cell", "model.cell_options")
    same = ModelConfig(cell="lstm", cell_options={"forget_bias": 2.0}, decoder_cell="lstm")
    assert same.side_cell("decoder").options == {"forget_bias": 2.0}
    own = ModelConfig(cell="lstm", decoder_cell_options={"proj_size": 4})
    assert own.side_cell("decoder").options == {"proj_size": 4}
    assert own.side_cell("encoder").options == {}


def test_each_side_builds_its_own_cell_with_its_own_options() -> None:
    config = ModelConfig(
        embed_size=8,
        hidden_size=12,
        encoder_cell="gru",
        decoder_cell="lstm",
        decoder_cell_options={"proj_size": 6},
    )
    model = Seq2Seq(config, side_cells(config), 30, 30, 0, share_vocab=True)
    assert cells_of(model.encoder) == {"GRUCell"}
    assert cells_of(model.decoder) == {"LSTMCell"}
    assert model.decoder.output_size == 6  # the decoder's options, not the encoder's


def test_a_model_with_the_shorthand_is_built_as_before() -> None:
    """Old runs have no per-side keys: the same parameters, drawn in the same order."""
    models = []
    for config in (
        ModelConfig(embed_size=8, hidden_size=12, cell="gru"),
        ModelConfig(embed_size=8, hidden_size=12, encoder_cell="gru", decoder_cell="gru"),
    ):
        torch.manual_seed(0)
        models.append(Seq2Seq(config, side_cells(config), 30, 30, 0, share_vocab=True))
    torch.manual_seed(0)
    shorthand = ModelConfig(embed_size=8, hidden_size=12, cell="gru")
    models.append(Seq2Seq(shorthand, cell_factory("gru", {}), 30, 30, 0, share_vocab=True))
    first = models[0].state_dict()
    for model in models[1:]:
        assert list(model.state_dict()) == list(first)
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, first[name]), name


def test_a_saved_config_without_per_side_keys_stays_as_it_was(tmp_path: Path) -> None:
    config = load_config(tiny_recipe(tmp_path, pairs=20))
    assert "_cell" not in config_to_toml(config)
    model = config.model.model_dump(mode="json")
    assert seq2seq_layers_line(model) == seq2seq_layers_line(
        {k: v for k, v in model.items() if "_cell" not in k}
    )
    assert "cell" not in seq2seq_layers_line(model)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.encoder_cell=nope"], "model.encoder_cell: unknown cell 'nope' (installed: "),
        (["model.decoder_cell=nope"], "model.decoder_cell: unknown cell 'nope' (installed: "),
        (
            ["model.encoder_cell=gru", "model.encoder_cell_options={forget_bias=1.0}"],
            "model.encoder_cell_options.forget_bias: unknown option for cell 'gru'",
        ),
        (
            ["model.decoder_cell_options={proj_size='3'}"],
            "model.decoder_cell_options.proj_size: cell 'lstm' expects int",
        ),
        (
            ["model.decoder_cell_options={proj_size=1000}"],
            "model.decoder_cell_options: cell 'lstm' (input_size=",
        ),
        (["model.encoder_cell=3"], "model.encoder_cell"),
        (["model.encoder.cell='gru'"], "model.encoder"),
    ],
)
def test_bad_per_side_keys_are_one_line_config_errors(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    recipe = tiny_recipe(tmp_path, pairs=20)
    with pytest.raises(ConfigError) as caught:
        load_config(recipe, overrides)
    text = str(caught.value)
    assert text.startswith(f"{recipe}: {message}"), text
    assert "\n" not in text


def test_gru_encoder_and_lstm_decoder_train_resume_decode_average_and_show(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    recipe, run = tiny_recipe(tmp_path / "recipe", pairs=150, steps=4), tmp_path / "run"
    train = ["train", str(recipe), "--out", str(run), "-q", *GRU_ENCODER_LSTM_DECODER]
    trained = runner.invoke(app, train)
    assert trained.exit_code == 0, trained.output
    resumed = runner.invoke(app, [*train, "--set", "train.max_steps=6"])
    assert resumed.exit_code == 0, resumed.output
    # the recipe as read (no options resolved) describes the model the run saved
    last = run / "checkpoints" / "last.pt"
    sets = [item for item in GRU_ENCODER_LSTM_DECODER if item != "--set"]
    check_resumable(load_checkpoint(last), load_config(recipe, sets), last)

    _, _, model, _ = load_run(run, device="cpu")
    assert cells_of(model.encoder) == {"GRUCell"}
    assert cells_of(model.decoder) == {"LSTMCell"}
    for beam in ("1", "3"):  # greedy and beam search
        translated = runner.invoke(
            app, ["translate", str(run), "--beam", beam, "--device", "cpu"], input="A dog.\n"
        )
        assert translated.exit_code == 0, translated.output
        assert len(translated.stdout.splitlines()) == 1
    evaluated = runner.invoke(app, ["evaluate", str(run), "--split", "valid", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "BLEU" in evaluated.stdout
    averaged = runner.invoke(app, ["average", str(run), "--last", "1", "--no-validate", "-q"])
    assert averaged.exit_code == 0, averaged.output
    card = runner.invoke(app, ["info", str(run)])
    assert card.exit_code == 0, card.output
    assert "encoder cell gru, decoder cell lstm" in card.output
    card_json = json.loads(runner.invoke(app, ["info", str(run), "--json"]).output)
    assert card_json["model"]["encoder_cell"] == "gru"
    assert card_json["model"]["decoder_cell"] == "lstm"


ELMAN = """
import torch
from torch import nn

from s2s.cells import RecurrentCell


class Elman(RecurrentCell):
    options = {"scale": 1.0}

    def __init__(self, input_size, hidden_size, scale=1.0):
        super().__init__(input_size, hidden_size)
        self.input = nn.Linear(input_size, hidden_size)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)
        self.scale = scale

    def step(self, x_t, state):
        h = torch.tanh(self.input(x_t) + self.scale * self.recurrent(state[0]))
        return h, (h,)
"""


def test_a_plugin_cell_in_the_decoder_only_trains_and_translates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_distribution(
        tmp_path / "site",
        "elman-cells",
        {"elman": "s2s_test_elman:Elman"},
        {"s2s_test_elman": ELMAN},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert load_cell_class("elman").options == {"scale": 1.0}
    recipe, run = tiny_recipe(tmp_path / "recipe", pairs=150, steps=3), tmp_path / "run"
    sides = ["--set", "model.decoder_cell=elman", "--set", "model.decoder_cell_options={scale=0.5}"]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(recipe), "--out", str(run), "-q", *sides])
    assert trained.exit_code == 0, trained.output

    _, _, model, _ = load_run(run, device="cpu")
    assert cells_of(model.encoder) == {"LSTMCell"}  # the shorthand's default
    assert cells_of(model.decoder) == {"Elman"}
    assert {cell.scale for layer in model.decoder.layers for cell in layer} == {0.5}
    translated = runner.invoke(app, ["translate", str(run), "--device", "cpu"], input="A dog.\n")
    assert translated.exit_code == 0, translated.output
    card = runner.invoke(app, ["info", str(run)])
    # every option a cell was built with is recorded, its defaults included
    assert "encoder cell lstm (proj_size=0), decoder cell elman (scale=0.5)" in card.output

    # the run records the side's own cell: who provided it, and its options
    about = json.loads((run / "about.json").read_text(encoding="utf-8"))
    decoder = about["sessions"][-1]["side_cells"]["decoder"]
    assert (decoder["name"], decoder["distribution"]) == ("elman", "elman-cells")
    assert decoder["options"] == {"scale": 0.5}
    assert "encoder" not in about["sessions"][-1]["side_cells"]  # it uses the shorthand
    # without the plugin, decoding names the distribution that provided the side's cell
    installed = cell_record.find_cell
    monkeypatch.setattr(
        cell_record,
        "find_cell",
        lambda name, key="model.cell": None if name == "elman" else installed(name, key),
    )
    missing = runner.invoke(app, ["translate", str(run), "--device", "cpu"], input="A dog.\n")
    assert missing.exit_code != 0
    assert "this run was trained with it from elman-cells" in missing.output


def test_a_language_model_uses_the_decoder_cell_and_refuses_an_encoder_one(
    tmp_path: Path,
) -> None:
    from test_language_model import RECIPE, tiny_overrides

    from s2s.tasks.language_model.model import build_language_model
    from s2s.tasks.language_model.task import LanguageModelTask

    overrides = tiny_overrides(tmp_path)
    config = load_config(RECIPE, [*overrides, "model.decoder_cell=gru"])
    assert cells_of(build_language_model(config, 50).stack) == {"GRUCell"}
    model = config.model.model_dump(mode="json")
    assert LanguageModelTask().layers_line(model).endswith(", decoder cell gru")
    with pytest.raises(ConfigError, match="a language model has no encoder"):
        load_config(RECIPE, [*overrides, "model.encoder_cell=gru"])


def test_a_speech_model_takes_a_cell_per_side() -> None:
    from s2s.config import AudioConfig
    from s2s.tasks.speech.model import SpeechSeq2Seq

    config = ModelConfig(embed_size=16, hidden_size=24, encoder_cell="gru", decoder_cell="rnn")
    audio = AudioConfig(features="precomputed", feature_dim=13)
    model = SpeechSeq2Seq(config, audio, side_cells(config), 12, ctc=True)
    assert cells_of(model.encoder) == {"GRUCell"}
    assert cells_of(model.decoder) == {"RNNCell"}
