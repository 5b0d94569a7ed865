"""Recipes: a typed TOML schema, `--set` overrides, and one-line errors naming file and key."""

from __future__ import annotations

import math
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Protocol

import tomli_w
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from s2s.errors import ConfigError


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated,
    and float keys refuse nan and inf (TOML has both), which no rate, weight or length can
    use; a key where inf means something says so with its own ``allow_inf_nan``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TaskRules(Protocol):
    """What the schema asks of the installed tasks while it validates a config. The tasks
    sit above the schema, so s2s.tasks.registry installs its rules (`use_task_rules`) when
    it is imported; until then a config is checked against its schema alone."""

    def check_type(self, name: str) -> None:
        """Raise ValueError unless ``name`` is an installed task."""
        ...

    def apply_defaults(self, config: Config) -> None:
        """The task's values for the keys the recipe left out, and its refusals (ValueError,
        reported with the recipe's other errors)."""
        ...


_task_rules: TaskRules | None = None


def use_task_rules(rules: TaskRules) -> None:
    """Check every config validated from now on against ``rules`` (s2s.tasks.registry's)."""
    global _task_rules
    _task_rules = rules


def _installed_task(name: str) -> str:
    """A task type names an installed task."""
    if _task_rules is not None:
        _task_rules.check_type(name)
    return name


class TaskConfig(Section):
    name: str = Field("", description="run name; the default run directory is runs/<name>")
    type: Annotated[str, AfterValidator(_installed_task)] = Field(
        "translation",
        description="what the run learns: an installed task (`s2s tasks` lists them); "
        "picks the trainer, metric and commands",
    )
    src_lang: str = "src"
    tgt_lang: str = "tgt"


class SplitConfig(Section):
    """Where one split of a parallel corpus lives: text files, a TSV/JSON-lines file, or the hub."""

    src: Path | None = Field(None, description="source text file, one sentence per line (.gz ok)")
    tgt: Path | list[Path] | None = Field(
        None,
        description="target text file, line-aligned with src; a list of files gives several "
        "references per source (training reads the first)",
    )
    path: Path | None = Field(None, description="one .tsv or .jsonl file holding both sides")
    text: Path | None = Field(
        None, description="language models: one plain text file (.gz/.xz ok), a token stream"
    )
    src_field: str = "src"
    tgt_field: str = "tgt"
    hub: str | None = Field(None, description="a Hugging Face hub dataset name")
    hub_config: str | None = None
    hub_split: str | None = None
    archive: Path | None = Field(
        None,
        description="a .tar(.gz/.xz/.bz2) holding the files a manifest (`path`) names; "
        "extracted once into the run's cache, manifest paths are then relative to its root",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SplitConfig:
        kinds = [
            self.src is not None or self.tgt is not None,
            self.path is not None,
            bool(self.hub),
            self.text is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of: src+tgt text files, path, text, or hub")
        if kinds[0] and (self.src is None or self.tgt is None):
            raise ValueError("text splits need both src and tgt")
        if self.archive is not None and self.path is None:
            raise ValueError("archive goes with a manifest given as path")
        return self

    @field_validator("tgt")
    @classmethod
    def _references_listed(cls, value: Path | list[Path] | None) -> Path | list[Path] | None:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list names no reference file")
        return value

    def target_files(self) -> list[Path]:
        """The target file, or every reference file when ``tgt`` lists several."""
        if self.tgt is None:
            return []
        return list(self.tgt) if isinstance(self.tgt, list) else [self.tgt]

    def files(self) -> list[Path]:
        single = (self.src, self.path, self.archive, self.text)
        return [p for p in single if p is not None] + self.target_files()


class TokenizerConfig(Section):
    model_type: Literal["unigram", "bpe", "char", "word"] = "unigram"
    vocab_size: int = Field(8000, ge=16)
    joint: bool = True
    character_coverage: float = Field(1.0, gt=0.0, le=1.0)
    input_sentence_size: int = Field(1_000_000, ge=100)
    model: Path | None = Field(
        None,
        description="use this sentencepiece model (e.g. another run's spm.model) instead of "
        "training one: a language model then shares a translation run's vocabulary (fusion)",
    )


# `model.copy` is the recipe's name for the copy mechanism; it hides pydantic's deprecated
# BaseModel.copy (s2s uses model_copy), which pydantic warns about when the class is built.
warnings.filterwarnings("ignore", 'Field name "copy" in "ModelConfig"', UserWarning)


def _finite_option(value: Any) -> Any:
    """A cell option holds no nan or inf (nested in a list or table either): no cell
    option means them, and the saved config could not hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Input should be a finite number, got {value!r}")
    items = value.values() if isinstance(value, dict) else value
    for item in items if isinstance(value, dict | list) else ():
        _finite_option(item)
    return value


CellOption = Annotated[Any, AfterValidator(_finite_option)]
Side = Literal["encoder", "decoder"]


class CellChoice(NamedTuple):
    """The cell one side of the model uses, and the config keys that chose it (errors
    name the key the user wrote: ``model.encoder_cell`` or the ``model.cell`` shorthand)."""

    name: str
    options: dict[str, Any]
    name_key: str
    options_key: str


class ModelConfig(Section):
    cell: str = Field("lstm", description="the cell of both sides, unless a side names its own")
    cell_options: dict[str, CellOption] = Field(default_factory=dict)
    encoder_cell: str | None = Field(None, description="the encoder's cell; unset: model.cell")
    encoder_cell_options: dict[str, CellOption] | None = Field(
        None,
        description="the encoder's cell options; unset: model.cell_options if the encoder "
        "uses model.cell, else the cell's defaults",
    )
    decoder_cell: str | None = Field(None, description="the decoder's cell; unset: model.cell")
    decoder_cell_options: dict[str, CellOption] | None = Field(
        None,
        description="the decoder's cell options; unset: model.cell_options if the decoder "
        "uses model.cell, else the cell's defaults",
    )
    embed_size: int = Field(256, ge=1)
    hidden_size: int = Field(512, ge=2, description="decoder width = encoder output width")
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    bidirectional: bool = True
    attention: Literal["dot", "general", "bahdanau"] = "general"
    input_feeding: bool = False
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    residual: bool = False
    tie_embeddings: bool = True
    attentional_size: int = Field(
        0,
        ge=0,
        description="width of the attentional vector tanh(W[context; h]) that the output layer "
        "(and input feeding) reads; 0: embed_size, which tie_embeddings needs",
    )
    copy: bool = Field(
        False,
        description="pointer-generator copy mechanism: a learned switch mixes generating from "
        "the vocabulary with copying a source token through attention (needs tokenizer.joint)",
    )
    max_source_length: int = Field(
        0, ge=0, description="the encoder reads only the first N source tokens; 0: all of them"
    )
    init: Literal["pytorch", "uniform"] = Field(
        "uniform",
        description="how a new model's parameters start: every parameter uniform in "
        "±init_range (OpenNMT-py's param_init, fairseq's LSTMs), or each layer's PyTorch default",
    )
    init_range: float = Field(0.1, gt=0.0, description="the bound of init = 'uniform'")

    @model_validator(mode="after")
    def _even_width_when_bidirectional(self) -> ModelConfig:
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(
                "hidden_size must be even when bidirectional (split between directions)"
            )
        if self.tie_embeddings and self.attentional_size not in (0, self.embed_size):
            raise ValueError(
                "attentional_size must equal embed_size (or be 0) when tie_embeddings is true: "
                "the output layer shares the embedding matrix"
            )
        return self

    def side_cell(self, side: Side) -> CellChoice:
        """The cell ``side`` uses: its own keys where set, else the ``cell`` shorthand.
        Options follow their cell: ``cell_options`` never reach a side that names another
        cell, whose options they need not be."""
        name = getattr(self, f"{side}_cell")
        options = getattr(self, f"{side}_cell_options")
        name_key = f"model.{side}_cell" if name is not None else "model.cell"
        name = self.cell if name is None else name
        if options is not None:
            return CellChoice(name, options, name_key, f"model.{side}_cell_options")
        if name == self.cell:
            return CellChoice(name, self.cell_options, name_key, "model.cell_options")
        return CellChoice(name, {}, name_key, f"model.{side}_cell_options")


# The precisions train.amp and decode.amp take (decode.amp adds int8 matmuls on the CPU);
# the command-line tools offer the same choices.
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
DECODE_AMP_CHOICES = (*AMP_CHOICES, "int8")
TrainAmp = Literal["auto", "bf16", "fp16", "off"]
DecodeAmp = Literal["auto", "bf16", "fp16", "off", "int8"]


# step checkpoints a budgeted run keeps, so its end can average the last few
BUDGET_KEEP_LAST = 5
# a budgeted run ends by its deadline, not by the recipe's epoch count
BUDGET_MAX_EPOCHS = 100_000
# schedules laid out over steps, which a budget replaces by its own over elapsed time;
# "constant" and "plateau" assume no number of steps and are kept
STEP_SCHEDULES = ("inverse_sqrt", "cosine")


class TrainConfig(Section):
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="CPU threads; 0 keeps torch's default")
    amp: TrainAmp = "auto"
    compile: bool = Field(
        False, description="torch.compile the step of cells that only implement step"
    )
    max_tokens: int = Field(3500, ge=1, description="padded tokens per batch (one side)")
    max_length: int = Field(100, ge=1, description="drop training pairs longer than this")
    max_epochs: int = Field(30, ge=1)
    max_steps: int = Field(0, ge=0, description="0: no step limit")
    max_minutes: float = Field(
        0.0, ge=0.0, allow_inf_nan=True, description="0 (or inf): no time limit"
    )
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="AdamW (betas, decoupled weight_decay), or SGD (no momentum)"
    )
    budget_minutes: float = Field(
        0.0,
        ge=0.0,
        description="0: off. Train for this many minutes: the learning rate decays with "
        "elapsed time to min_lr at the deadline, validation is spaced by time (valid_share), "
        "and the run ends with the best of its checkpoint averages (docs/budget.md)",
    )
    valid_share: float = Field(
        0.1, gt=0.0, lt=1.0, description="with budget_minutes: the most validation may take"
    )
    schedule: Literal["inverse_sqrt", "constant", "plateau", "cosine", "budget"] = Field(
        "inverse_sqrt", description="budget: cosine over elapsed time (budget_minutes' default)"
    )
    warmup_steps: int = Field(400, ge=0)
    min_lr: float = Field(1e-5, ge=0.0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(2, ge=0)
    clip_norm: float = Field(1.0, ge=0.0, description="0: no clipping")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    ctc_weight: float = Field(
        0.0, ge=0.0, lt=1.0, description="speech: weight w of a CTC loss on the encoder"
    )
    accum_steps: int = Field(1, ge=1)
    valid_every: int = Field(500, ge=1, description="validate every N optimiser steps")
    valid_decode: bool = Field(
        True,
        validation_alias=AliasChoices("valid_decode", "valid_bleu"),
        description="at each validation also decode `valid` greedily and score it with the "
        "task's metric (BLEU, ROUGE, WER/CER); `valid_bleu` is the old name",
    )
    early_stopping_metric: str = Field(
        "bleu", description="a metric the task validates by (default: the task's first)"
    )
    patience: int = Field(8, ge=0, description="validations without improvement; 0: off")
    keep_best: int = Field(2, ge=1)
    keep_last: int = Field(
        0, ge=0, description="also keep the N most recent step checkpoints (s2s average)"
    )
    save_every: int = Field(
        0, ge=0, description="also write checkpoints/last.pt every N steps; 0: at validation"
    )
    max_bad_steps: int = Field(
        10, ge=0, description="stop after more than N steps in a row with a non-finite loss"
    )
    log_every: int = Field(50, ge=1)
    bptt: int = Field(35, ge=1, description="language models: tokens per truncated-BPTT window")
    streams: int = Field(
        20, ge=1, description="language models: parallel token streams, the batch size"
    )
    tensorboard: bool = Field(True, description="TensorBoard scalars in RUN/tensorboard")

    @model_validator(mode="after")
    def _length_fits_budget(self) -> TrainConfig:
        if self.max_length > self.max_tokens:
            raise ValueError("max_length must not exceed max_tokens (a pair must fit in a batch)")
        if self.early_stopping_metric != "loss" and not self.valid_decode:
            raise ValueError(
                f"early_stopping_metric = {self.early_stopping_metric!r} needs valid_decode = true"
            )
        return self

    @model_validator(mode="after")
    def _budget_defaults(self) -> TrainConfig:
        """A budget brings its time-driven schedule in place of a step-driven one (a recipe's
        ``inverse_sqrt`` was tuned for its epoch count, not for the deadline), ends the run
        at the deadline whatever ``max_epochs``, ``max_minutes`` and ``patience`` say (the
        budget is the time limit; a recipe's patience counts validations spaced by steps,
        and stopped an AN4 run whose cosine had not yet decayed), and keeps checkpoints to
        average."""
        if self.budget_minutes > 0:
            if self.schedule in STEP_SCHEDULES:
                self.schedule = "budget"
            if "keep_last" not in self.model_fields_set:
                self.keep_last = BUDGET_KEEP_LAST
            if self.max_epochs != BUDGET_MAX_EPOCHS:  # (assigning validates again)
                self.max_epochs = BUDGET_MAX_EPOCHS
            if self.max_minutes:
                self.max_minutes = 0.0
            if self.patience:  # counted in validations, which a budget spaces by time
                self.patience = 0
        elif self.schedule == "budget":
            raise ValueError("schedule = 'budget' needs budget_minutes > 0 (or --budget)")
        return self


class AudioConfig(Section):
    """Speech input (task.type = "speech"): features, normalisation, SpecAugment, subsampling."""

    features: Literal["fbank", "precomputed"] = Field(
        "fbank", description="log-mel filterbanks from audio files, or .npy / Sphinx .mfc files"
    )
    sample_rate: int = Field(16000, ge=1000, description="audio at another rate is resampled")
    n_mels: int = Field(80, ge=1)
    feature_dim: int = Field(
        0, ge=0, description="width of precomputed features; 0: training reads it from the data"
    )
    frame_ms: float = Field(25.0, gt=0.0)
    hop_ms: float = Field(10.0, gt=0.0)
    deltas: int = Field(0, ge=0, le=2, description="append deltas (1) and delta-deltas (2)")
    normalize: bool = Field(True, description="per-utterance mean and variance normalisation")
    freq_masks: int = Field(2, ge=0, description="SpecAugment masks per utterance (training)")
    freq_mask_width: int = Field(10, ge=0)
    time_masks: int = Field(2, ge=0)
    time_mask_width: int = Field(40, ge=0, description="frames; at most 1/5 of the utterance")
    tempo_perturbation: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="training: resample each utterance in time by a random rate in 1 ± x",
    )
    subsampling_layers: int = Field(2, ge=0, le=4, description="stride-2 convolutions (2: 4x)")


class ForecastConfig(Section):
    """Time series (task.type = "forecasting"): the columns of the data file, the windows,
    the periods held out at the end of every series, and the output distribution."""

    id_column: str = Field("", description="the series id column; empty: one series")
    time_column: str = Field("time", description="timestamps, one row per step, no gaps")
    target_column: str = Field("value", description="the numbers to forecast")
    covariates: list[str] = Field(
        default_factory=list,
        description="numeric columns known in advance (read over the context and horizon)",
    )
    time_features: bool = Field(
        True, description="add time-of-day and day-of-week (sin, cos) from the timestamps"
    )
    context_length: int = Field(96, ge=1, description="steps the encoder reads")
    horizon: int = Field(24, ge=1, description="steps forecast from each origin")
    season_length: int = Field(
        1, ge=1, description="steps per season: seasonal naive and MASE's scale (48: daily)"
    )
    lags: list[int] = Field(
        default_factory=list,
        description="more seasonal periods whose seasonal-naive value the decoder reads "
        "(336: a week of half-hours); each at most context_length",
    )
    valid_steps: int = Field(0, ge=0, description="validation period at the end; 0: horizon")
    test_steps: int = Field(0, ge=0, description="test period after it, at the end; 0: horizon")
    origin_stride: int = Field(
        0, ge=0, description="steps between rolling forecast origins; 0: the horizon"
    )
    scaling: Literal["mean", "standard", "none"] = Field(
        "mean", description="per window: divide by the context's mean |y|, or standardise"
    )
    loss: Literal["student_t", "gaussian", "mse"] = Field(
        "student_t", description="the output head: a distribution (NLL) or a point (MSE)"
    )
    decoder: Literal["direct", "autoregressive"] = Field(
        "direct",
        description="decoder inputs: known features only (direct), or the previous value "
        "too (teacher forcing in training, its own median at test)",
    )
    batch_size: int = Field(64, ge=1, description="training windows per batch")
    num_samples: int = Field(200, ge=1, description="samples per forecast for CRPS")
    interval: float = Field(0.8, gt=0.0, lt=1.0, description="central prediction interval")


Stopping = Literal["exact", "early"]


class DecodeConfig(Section):
    beam_size: int = Field(5, ge=1)
    length_penalty: float = Field(1.0, ge=0.0, description="GNMT alpha; 0 scores raw log-probs")
    stopping: Stopping = Field(
        "exact",
        description="beam search: a sentence ends when its n-best can no longer change "
        "(exact) or as soon as its n best are finished (early, as OpenNMT-py: faster)",
    )
    max_length_ratio: float = Field(2.0, gt=0.0)
    max_length_offset: int = Field(10, ge=0)
    batch_tokens: int = Field(6000, ge=1, description="source tokens per decoding batch")
    amp: DecodeAmp = Field(
        "auto",
        description="decoding precision, as train.amp: bf16 is faster on CPUs with AMX; "
        "int8 (CPU only) runs the decoder's matmuls in int8, fastest on CPUs with VNNI",
    )
    nbest: int = Field(1, ge=1)
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="no n-gram of this many tokens occurs twice in an output (0: off)"
    )
    min_length: int = Field(
        0, ge=0, description="outputs hold at least this many tokens before EOS (0: off)"
    )
    ctc_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="speech: joint CTC/attention decoding, weight w of CTC prefix scores",
    )


class Config(Section):
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: dict[str, SplitConfig]
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)

    @model_validator(mode="after")
    def _has_train_and_valid(self) -> Config:
        missing = [name for name in ("train", "valid") if name not in self.data]
        if missing:
            raise ValueError(f"data needs the split(s) {', '.join(missing)}")
        if self.model.copy and not self.tokenizer.joint:
            # copying scatters attention onto source ids, which must be target ids too
            raise ValueError("model.copy = true needs tokenizer.joint = true")
        if self.decode.ctc_weight > 0 and self.train.ctc_weight == 0:
            # joint decoding reads the CTC head that only train.ctc_weight > 0 builds
            raise ValueError("decode.ctc_weight > 0 needs a CTC head: set train.ctc_weight > 0")
        if _task_rules is not None:
            # the task's defaults (a speech run's WER, not translation's BLEU) and its refusals
            _task_rules.apply_defaults(self)
        return self


def _format_validation_error(error: ValidationError, set_by: dict[str, str] | None = None) -> str:
    """Render pydantic's errors as 'key.path: message' parts on one line; a key that a
    ``--set`` gave (``set_by``: key -> its --set text) says so, as the file does not hold it."""
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif "expected" in item.get("ctx", {}):
            message = f"{message} (got {item['input']!r})"
        elif item["type"] not in ("value_error",) and not isinstance(item["input"], dict):
            message = f"{message}, got {item['input']!r}"
        parts.append(f"{key}: {message.removeprefix('Value error, ')}{_set_note(key, set_by)}")
    return "; ".join(parts)


def _set_note(key: str, set_by: dict[str, str] | None) -> str:
    """' (--set k=v)' when the key, or a section holding it, came from a --set."""
    for set_key, text in (set_by or {}).items():
        if key == set_key or key.startswith(f"{set_key}."):
            return f" (--set {text!r})"
    return ""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'section.key=value'; the value is read as TOML, else taken as a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, _, raw = text.partition("=")
    path = [p.strip() for p in key.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each override into the raw recipe dict; the schema type-checks them afterwards."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def with_decode_overrides(config: Config, overrides: list[str]) -> Config:
    """A trained run's config with ``--set decode.key=value`` applied. Only [decode] may
    change after training: the other sections built the model and its data. The whole
    config is validated again, so checks across sections hold (decode.ctc_weight needs
    the CTC head that train.ctc_weight builds)."""
    if not overrides:
        return config
    for text in overrides:
        path, _ = parse_override(text)
        if path[0] != "decode":
            raise ConfigError(f"--set {text!r}: only decode.* keys can change after training")
    raw = apply_overrides(config.model_dump(mode="json", exclude_none=True), overrides)
    return config_from_dict(raw, "--set")


def _resolve_paths(config: Config, recipe: Path) -> None:
    """Make data paths absolute, relative to the recipe's own folder, and check they exist."""
    if config.tokenizer.model is not None:
        config.tokenizer.model = _resolved(recipe, config.tokenizer.model, "tokenizer.model")
    for split_name, split in config.data.items():
        for field in ("src", "tgt", "path", "archive", "text"):
            value = getattr(split, field)
            if isinstance(value, list):
                found = [
                    _resolved(recipe, p, f"data.{split_name}.{field}[{i}]")
                    for i, p in enumerate(value)
                ]
                setattr(split, field, found)
            elif value is not None:
                setattr(split, field, _resolved(recipe, value, f"data.{split_name}.{field}"))


def _resolved(recipe: Path, value: Path, key: str) -> Path:
    """``value`` made absolute against the recipe's folder; a missing file is an error."""
    path = value if value.is_absolute() else (recipe.parent / value)
    try:
        path = path.resolve()
        found = path.exists()
    except (OSError, ValueError) as error:  # a NUL byte, a name too long
        raise ConfigError(f"{recipe}: {key}: {error}") from None
    if not found:
        hint = ""
        if key.endswith(".text"):
            hint = " (edit that key to point at your copy)"
        elif key == "tokenizer.model":
            hint = " (train the run it belongs to first, or point it at an spm.model)"
        raise ConfigError(f"{recipe}: {key}: file not found: {path}{hint}")
    return path


def read_recipe(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override, validate and resolve a recipe against the schema; any problem is a
    one-line ConfigError. s2s.tasks.recipe.load_config adds the checks of the recipe's task."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from None
    raw = apply_overrides(raw, overrides or [])
    set_by = {".".join(parse_override(text)[0]): text for text in overrides or []}
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_format_validation_error(error, set_by)}") from None
    if not config.task.name:
        config.task.name = path.stem
    _resolve_paths(config, path)
    return config


# Saved configs from before model.init existed: those models started from PyTorch's defaults.
SAVED_BEFORE_INIT = "pytorch"


def config_from_dict(raw: dict[str, Any], origin: str) -> Config:
    """Validate an already-parsed config (a run directory's or checkpoint's saved copy).
    A saved [model] without `init` predates that key, so it reads as "pytorch", the way
    that model was built, not as today's default."""
    model = raw.get("model")
    if isinstance(model, dict) and "init" not in model:
        raw = {**raw, "model": {**model, "init": SAVED_BEFORE_INIT}}
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {_format_validation_error(error)}") from None


def config_to_toml(config: Config) -> str:
    """Serialise the resolved config; paths become strings, None values are left out."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def read_saved_config(path: Path) -> Config:
    """Load the resolved config a run directory holds."""
    if not path.is_file():
        raise ConfigError(f"{path}: no saved config (is this a run directory?)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: malformed saved config: {error}") from None
    return config_from_dict(raw, str(path))
