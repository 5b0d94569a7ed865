"""The `Task` interface: one object per task type, owning everything that differs between
translation, summarisation, language modelling and speech.

The generic code (config checks, the training loop, run loading, `s2s evaluate`, `s2s
average`, the model card, distributed training, the CLI) asks the recipe's task and never
compares its name. Tasks are found through the entry-point group ``s2s.tasks``
(`s2s.tasks.registry`), so a third party adds one with `pip install`; docs/tasks.md says how.

Task modules import torch and their own packages inside methods: reading a recipe asks its
task for defaults and checks, and must not load another task's dependencies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from s2s.errors import ConfigError, S2SError

if TYPE_CHECKING:
    import torch

    from s2s.config import Config
    from s2s.core.cell_registry import SideCells
    from s2s.data.tokenizer import TokenizerPair
    from s2s.run.directory import RunDir
    from s2s.scores import Score
    from s2s.train.trainer import Trainer


@dataclass
class EvaluationRequest:
    """What `s2s evaluate` asks of a run: a split (or src/ref files), the search and where
    to write the output; ``amp`` and ``decode_overrides`` change the saved [decode]."""

    split: str = "test"
    src: Path | None = None
    ref: Path | list[Path] | None = None  # several files: several references per source
    beam: int | None = None
    output: Path | None = None
    checkpoint: Path | None = None
    device: str = "auto"
    amp: str | None = None
    decode_overrides: Sequence[str] = field(default_factory=tuple)
    # text runs: other runs to ensemble with, and a language model to fuse (weight)
    ensemble: Sequence[Path] = field(default_factory=tuple)
    lm: Path | None = None
    lm_weight: float = 0.3


class Task(ABC):
    """One task type. Subclasses set the class attributes and implement the abstract
    methods; the defaults suit an encoder-decoder over text."""

    name: ClassVar[str]
    # Scores its validation logs as valid_<metric>: the values train.early_stopping_metric
    # may take. The first is the default early-stopping metric; "loss" is always last.
    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    # Whether its trainer shards batches and validation across torchrun's ranks.
    supports_ddp: ClassVar[bool] = False
    # Whether a recipe may set train.ctc_weight (a CTC head on the encoder).
    uses_ctc: ClassVar[bool] = False
    # whether `s2s transcribe` serves its runs (audio in, text out)
    transcribes: ClassVar[bool] = False
    # Why the text-to-text loaders (`s2s translate`, `s2s align`) refuse its runs, and
    # which commands serve them instead; empty: they serve it.
    refusal: ClassVar[str] = ""
    # The command `s2s average` suggests for the averaged checkpoint.
    decode_command: ClassVar[str] = "evaluate"
    # The methods of a loaded run (`s2s.load`, and the routes of `s2s serve`) that use its
    # runs: translate (text to text), transcribe (audio to text), generate and score (a
    # language model). The first is the one an error suggests for a method it lacks.
    serves: ClassVar[tuple[str, ...]] = ("translate",)

    # -- the recipe -----------------------------------------------------------------------
    def apply_defaults(self, config: Config) -> None:
        """Fill the keys the recipe left out with this task's values, and refuse what the
        schema cannot hold for it (a ValueError, reported with the recipe's other errors).
        Runs on every config read, saved ones included."""
        if "early_stopping_metric" not in config.train.model_fields_set:
            config.train.early_stopping_metric = self.metrics[0]
        text_splits = [name for name, split in config.data.items() if split.text is not None]
        if text_splits:
            raise ValueError(f"data.{text_splits[0]}.text is for task.type = 'language_model'")

    def check_config(self, config: Config) -> None:
        """Settings this task cannot serve, refused when a recipe is read (a ConfigError)
        rather than at the first validation or silently ignored. Saved configs are not
        checked again: a run trained before a check stays usable."""
        metric = config.train.early_stopping_metric
        if metric not in self.metrics:
            names = self.metrics
            choices = " or ".join([", ".join(names[:-1]), names[-1]] if names[:-1] else names)
            raise ConfigError(
                f"train.early_stopping_metric = {metric!r}: "
                f"a {self.name.replace('_', ' ')} run validates by {choices}"
            )
        if not self.uses_ctc and config.train.ctc_weight > 0:
            raise ConfigError("train.ctc_weight > 0: a CTC loss is for task.type = 'speech'")

    def check_extras(self, config: Config) -> None:
        """The optional packages this task's training needs are installed (none here)."""
        return

    # -- the model ------------------------------------------------------------------------
    def joint_vocabulary(self, config: Config) -> bool:
        """Whether the run has one tokeniser for both sides (its files in the run)."""
        return config.tokenizer.joint

    def load_tokenizers(self, run_path: Path, config: Config) -> TokenizerPair | None:
        """The tokenisers a trained run holds, for `s2s info` (None: the task reads no
        text, and the card shows no vocabulary)."""
        from s2s.data.tokenizer import load_tokenizers

        return load_tokenizers(run_path, config.tokenizer.joint)

    def build_model(self, config: Config, tokenizers: TokenizerPair) -> torch.nn.Module:
        """The recipe's model, sized for ``tokenizers``, with fresh weights."""
        from s2s.core.seq2seq import build_seq2seq

        return build_seq2seq(config, tokenizers)

    def build_meta_model(self, config: Config, cells: SideCells, vocab: int) -> torch.nn.Module:
        """The recipe's model with a ``vocab``-sized vocabulary, for the load-time check
        that builds it on the meta device (the caller sets the device); ``cells`` are the
        recipe's checked cell factories, one per side."""
        from s2s.core.seq2seq import Seq2Seq
        from s2s.data.tokenizer import PAD_ID

        joint = config.tokenizer.joint
        return Seq2Seq(config.model, cells, vocab, vocab, PAD_ID, share_vocab=joint)

    # -- training -------------------------------------------------------------------------
    @abstractmethod
    def trainer_class(self) -> type[Trainer]:
        """The `Trainer` subclass with this task's hooks."""

    def make_trainer(self, config: Config, run: RunDir, quiet: bool = False) -> Trainer:
        """The trainer for ``config``, ready to ``train()``."""
        return self.trainer_class()(config, run, quiet=quiet, task=self)

    # -- trained runs ---------------------------------------------------------------------
    def require_text_decoding(self, path: Path) -> None:
        """Refuse a run the text-to-text loaders cannot serve, saying what does."""
        if self.refusal:
            raise S2SError(f"{path}: {self.refusal}")

    @abstractmethod
    def evaluate(self, run_dir: Path, request: EvaluationRequest) -> list[Score]:
        """`s2s evaluate`: the scores of the run's model on a split (or files)."""

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        """Validation scores of one checkpoint, computed as training computes them (`s2s
        average`), rounded as the metrics log rounds them."""
        raise S2SError(
            f"{run.path}: s2s average cannot validate a {self.name} run; "
            "use --no-validate, then s2s evaluate --checkpoint"
        )

    # -- the model card -------------------------------------------------------------------
    def task_line(self, task: dict[str, Any]) -> str:
        """The model card's task line, from the saved [task] section."""
        return f"{task['name']} ({task['type']}, {task['src_lang']} -> {task['tgt_lang']})"

    def layers_line(self, model: dict[str, Any]) -> str:
        """The model card's layers line, from the saved [model] section."""
        from s2s.tasks.card_lines import seq2seq_layers_line

        return seq2seq_layers_line(model)
