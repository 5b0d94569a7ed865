"""Recipe loading: one-line errors that name file and key; typed --set overrides."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import tiny_recipe
from pydantic import BaseModel

from s2s.config import Config, config_from_dict, config_to_toml
from s2s.errors import ConfigError
from s2s.tasks.recipe import load_config

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
WIKITEXT = RECIPES / "data" / "wikitext-2"
# PTB is not shipped: lm-ptb.toml is checked against WikiText-2 text in its place.
STAND_INS = {
    "lm-ptb": [
        f"data.{split}.text={WIKITEXT / f'{split}.txt.xz'}" for split in ("train", "valid", "test")
    ]
}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return tiny_recipe(tmp_path, pairs=20)


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# Fusion language models adopt their translation or speech run's tokenizer (runs/*/spm.model),
# which exists only once that run is trained: a tokenizer trained here stands in for it.
ADOPTS_A_RUNS_TOKENIZER = {"lm-de", "lm-an4"}


@pytest.fixture(scope="module")
def stand_in_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        input=str(RECIPES / "data" / "an4" / "train.txt"),
        model_prefix=str(folder / "spm"),
        model_type="char",
        minloglevel=2,
    )
    return folder / "spm.model"


@pytest.mark.parametrize("shipped", sorted(RECIPES.glob("*.toml")), ids=lambda path: path.stem)
def test_every_shipped_recipe_loads(shipped: Path, stand_in_tokenizer: Path) -> None:
    overrides = STAND_INS.get(shipped.stem, [])
    if shipped.stem in ADOPTS_A_RUNS_TOKENIZER:
        with pytest.raises(ConfigError, match=r"tokenizer\.model: file not found.*train the run"):
            load_config(shipped)  # before its run is trained: says so in one line
        overrides = [f"tokenizer.model={stand_in_tokenizer}"]
    config = load_config(shipped, overrides)
    assert config.task.name == shipped.stem
    assert all(split in config.data for split in ("train", "valid", "test"))


def test_valid_recipe_resolves_paths_relative_to_recipe(recipe: Path) -> None:
    config = load_config(recipe)
    assert config.task.name == "tiny"
    assert config.data["train"].src == (recipe.parent / "train.en").resolve()
    assert config.model.hidden_size == 48


def test_unknown_key_names_file_and_key(recipe: Path) -> None:
    recipe.write_text(recipe.read_text() + "\n[decode.extra]\n", encoding="utf-8")
    text = recipe.read_text().replace("hidden_size = 48", "hiden_size = 48")
    recipe.write_text(text, encoding="utf-8")
    message = error_of(recipe)
    assert str(recipe) in message
    assert "model.hiden_size: unknown key" in message


def test_wrong_type_says_what_was_expected(recipe: Path) -> None:
    recipe.write_text(recipe.read_text().replace("hidden_size = 48", 'hidden_size = "big"'))
    message = error_of(recipe)
    assert "model.hidden_size" in message and "integer" in message


def test_malformed_toml_reports_line(recipe: Path) -> None:
    lines = recipe.read_text().splitlines()
    lines.insert(2, "this is not toml")
    recipe.write_text("\n".join(lines))
    message = error_of(recipe)
    assert "malformed TOML" in message and "line 3" in message


def test_missing_data_file_names_key_and_path(recipe: Path) -> None:
    (recipe.parent / "valid.de").unlink()
    message = error_of(recipe)
    assert "data.valid.tgt: file not found" in message and "valid.de" in message


def test_missing_recipe() -> None:
    assert "recipe not found" in error_of(Path("no/such/recipe.toml"))


def test_split_must_name_one_source(recipe: Path) -> None:
    recipe.write_text(recipe.read_text().replace('tgt = "train.de"\n', "", 1))
    assert "data.train: text splits need both src and tgt" in error_of(recipe)


def test_overrides_are_typed_by_schema(recipe: Path) -> None:
    config = load_config(
        recipe,
        ["model.hidden_size=256", "model.cell=gru", "train.lr=1e-3", "model.bidirectional=false"],
    )
    assert config.model.hidden_size == 256
    assert config.model.cell == "gru"
    assert config.train.lr == pytest.approx(1e-3)
    assert config.model.bidirectional is False


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.hidden_size=abc", "model.hidden_size: Input should be a valid integer"),
        ("model.hidden_sise=3", "model.hidden_sise: unknown key"),
        ("train.amp=fp8", "train.amp: Input should be 'auto', 'bf16', 'fp16' or 'off'"),
        ("hidden_size=3", "expected section.key=value"),
        ("model.hidden_size", "expected section.key=value"),
        ("train.max_length=9999", "max_length must not exceed max_tokens"),
    ],
)
def test_bad_overrides(recipe: Path, override: str, expected: str) -> None:
    assert expected in error_of(recipe, [override])


def test_cli_config_error_is_one_line_with_exit_code_2(recipe: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "train", str(recipe), "--set", "model.cel=gru"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "model.cel: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


# -- numbers that are no numbers: nan and inf ---------------------------------------------

# Float keys where inf means something: no time limit.
INFINITY_MEANS_NO_LIMIT = {"train.max_minutes"}


def float_keys() -> list[str]:
    """Every float (or tuple-of-float) key of the schema, as section.key."""
    keys = []
    for section, field in Config.model_fields.items():
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        for name, inner in annotation.model_fields.items():
            if "float" in str(inner.annotation) or inner.annotation is float:
                keys.append(f"{section}.{name}")
    return sorted(keys)


def test_the_schema_has_the_float_keys_checked_below() -> None:
    assert {"train.lr", "train.betas", "decode.length_penalty", "audio.hop_ms"} <= set(float_keys())


@pytest.mark.parametrize("key", sorted(set(float_keys()) - INFINITY_MEANS_NO_LIMIT))
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_every_float_key_refuses_nan_and_inf(recipe: Path, key: str, value: str) -> None:
    field = key.split(".")[1]
    raw = f"[{value}, 0.9]" if field == "betas" else value
    message = error_of(recipe, [f"{key}={raw}"])
    assert message.startswith(f"{recipe}: {key}")
    assert "finite number" in message or "greater than" in message or "less than" in message


def test_nan_in_the_recipe_file_names_file_and_key(recipe: Path) -> None:
    recipe.write_text(recipe.read_text().replace("lr = 0.005", "lr = inf"), encoding="utf-8")
    message = error_of(recipe)
    assert message == f"{recipe}: train.lr: Input should be a finite number, got inf"


def test_an_infinite_time_limit_is_no_limit_and_survives_the_saved_config(recipe: Path) -> None:
    config = load_config(recipe, ["train.max_minutes=inf"])
    assert config.train.max_minutes == float("inf")
    saved = config_from_dict(tomllib.loads(config_to_toml(config)), "saved")
    assert saved.train.max_minutes == float("inf")
    assert "train.max_minutes" in error_of(recipe, ["train.max_minutes=nan"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "[1.0, nan]", "{a = inf}"])
def test_non_finite_cell_options_are_config_errors(recipe: Path, value: str) -> None:
    message = error_of(recipe, [f"model.cell_options={{forget_bias = {value}}}"])
    assert message.startswith(f"{recipe}: model.cell_options.forget_bias: ")
    assert "finite" in message


def test_a_non_finite_cell_option_leaves_no_run_directory(recipe: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train_cli(recipe, run, "--set", "model.cell_options={forget_bias=nan}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "model.cell_options.forget_bias" in result.stderr
    assert not run.exists()


def train_cli(recipe: Path, run: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2s", "train", str(recipe), "--out", str(run), "-q", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- settings that only some tasks can serve, checked when the recipe is read ---------------

ASR = RECIPES / "asr-digits.toml"
SUMMARIZATION = RECIPES / "summarization.toml"


@pytest.mark.parametrize(
    ("shipped", "override", "expected"),
    [
        (
            None,
            "train.early_stopping_metric=rouge_l",
            "a translation run validates by bleu, chrf, wer, cer, exact or loss",
        ),
        (None, "train.early_stopping_metric=accuracy", "validates by bleu, chrf, wer, cer, exa"),
        (SUMMARIZATION, "train.early_stopping_metric=bleu", "validates by rouge_l or loss"),
        (ASR, "train.early_stopping_metric=bleu", "a speech run validates by wer, cer or loss"),
        (ASR, "tokenizer.joint=false", "speech run has one vocabulary (its targets): tokenizer"),
        (None, "train.ctc_weight=0.3", "train.ctc_weight > 0: a CTC loss is for task.type = 'sp"),
    ],
)
def test_a_setting_the_task_cannot_serve_is_refused_when_the_recipe_is_read(
    recipe: Path, shipped: Path | None, override: str, expected: str
) -> None:
    path = shipped or recipe
    message = error_of(path, [override])
    assert message.startswith(f"{path}: ") and expected in message


def test_a_metric_the_task_cannot_give_leaves_no_run_directory(
    recipe: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = train_cli(recipe, run, "--set", "train.early_stopping_metric=rouge_l")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "train.early_stopping_metric" in result.stderr
    assert not run.exists()


@pytest.mark.parametrize(("shipped", "metric"), [(ASR, "wer"), (SUMMARIZATION, "rouge_l")])
def test_a_recipe_without_a_metric_stops_early_on_its_task_metric(
    tmp_path: Path, shipped: Path, metric: str
) -> None:
    text = "\n".join(
        line
        for line in shipped.read_text(encoding="utf-8").splitlines()
        if not line.startswith("early_stopping_metric")
    )
    edited = tmp_path / shipped.name
    edited.write_text(text.replace('"data/', f'"{RECIPES}/data/'), encoding="utf-8")
    assert load_config(edited).train.early_stopping_metric == metric


# -- cells: built once when the recipe is read, errors naming the recipe --------------------


def test_an_unknown_cell_names_the_recipe(recipe: Path) -> None:
    message = error_of(recipe, ["model.cell=lsmt"])
    assert message.startswith(f"{recipe}: model.cell: unknown cell 'lsmt' (installed: ")


def test_an_unknown_cell_option_names_the_recipe(recipe: Path) -> None:
    message = error_of(recipe, ["model.cell=gru", "model.cell_options={zoneout=0.1}"])
    assert message.startswith(f"{recipe}: model.cell_options.zoneout: unknown option for cell")


def test_a_cell_rejecting_its_options_is_found_when_the_recipe_is_read(recipe: Path) -> None:
    message = error_of(recipe, ["model.cell_options={proj_size=100}"])
    assert message.startswith(f"{recipe}: model.cell_options: cell 'lstm' ")
    assert "rejected its options: proj_size must be 0 (off) or below hidden_size" in message


def test_a_cell_rejecting_its_options_trains_no_tokenizer(recipe: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train_cli(recipe, run, "--set", "model.cell_options={proj_size=100}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{recipe}: model.cell_options: cell 'lstm'" in result.stderr
    assert not run.exists()


def test_a_bad_value_from_set_says_so(recipe: Path) -> None:
    message = error_of(recipe, ["train.lr=inf", "model.hidden_size=64"])
    assert message == (
        f"{recipe}: train.lr: Input should be a finite number, got inf (--set 'train.lr=inf')"
    )
    recipe.write_text(recipe.read_text().replace("lr = 0.005", "lr = inf"), encoding="utf-8")
    assert "--set" not in error_of(recipe, ["model.hidden_size=64"])


def test_the_amp_choices_are_the_schemas() -> None:
    """The command line and the tools offer exactly the precisions the schema accepts."""
    import typing

    from s2s.config import AMP_CHOICES, DECODE_AMP_CHOICES, DecodeConfig, TrainConfig

    assert typing.get_args(TrainConfig.model_fields["amp"].annotation) == AMP_CHOICES
    assert typing.get_args(DecodeConfig.model_fields["amp"].annotation) == DECODE_AMP_CHOICES
