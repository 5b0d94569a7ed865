"""Language modelling: one text, a left-to-right stack, validated and evaluated by
perplexity; generated from and scored by `s2s generate` and `s2s score`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from s2s.tasks.language_model.kind import LanguageModelKind
from s2s.tasks.task import EvaluationRequest, Task

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from s2s.config import Config
    from s2s.core.cell_registry import SideCells
    from s2s.data.tokenizer import TokenizerPair
    from s2s.run.directory import RunDir
    from s2s.scores import Score
    from s2s.train.trainer import Trainer


class LanguageModelTask(LanguageModelKind, Task):
    """A decoder-only recurrent language model over a token stream."""

    name: ClassVar[str] = "language_model"
    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    refusal: ClassVar[str] = "a language model; use s2s generate, s2s score or s2s evaluate with it"
    serves: ClassVar[tuple[str, ...]] = ("generate", "score")

    def apply_defaults(self, config: Config) -> None:
        """A language model reads `text` splits with one vocabulary and a one-way stack, and
        validates by loss; keys left out get those values, keys set otherwise are errors."""
        for name, split in config.data.items():
            if split.text is None:
                raise ValueError(f"data.{name}: a language model reads a `text` file")
        train, model = config.train, config.model
        if "early_stopping_metric" not in train.model_fields_set:
            train.early_stopping_metric = "loss"
        if "valid_decode" not in train.model_fields_set:
            train.valid_decode = False
        if "bidirectional" not in model.model_fields_set:
            model.bidirectional = False
        if not config.tokenizer.joint:
            raise ValueError("a language model has one vocabulary: tokenizer.joint = true")
        if model.encoder_cell is not None or model.encoder_cell_options is not None:
            raise ValueError(
                "a language model has no encoder: its cell is model.decoder_cell (or model.cell)"
            )
        if config.model.bidirectional:
            raise ValueError("a language model reads left to right: model.bidirectional = false")
        if config.train.early_stopping_metric != "loss" or config.train.valid_decode:
            raise ValueError(
                "a language model validates by loss: train.early_stopping_metric = 'loss' "
                "and train.valid_decode = false"
            )

    def build_model(self, config: Config, tokenizers: TokenizerPair) -> torch.nn.Module:
        from s2s.tasks.language_model.model import build_language_model

        return build_language_model(config, tokenizers.src.vocab_size)

    def build_meta_model(self, config: Config, cells: SideCells, vocab: int) -> torch.nn.Module:
        from s2s.tasks.language_model.model import LanguageModel

        return LanguageModel(config.model, cells.decoder, vocab)

    def trainer_class(self) -> type[Trainer]:
        from s2s.tasks.language_model.trainer import LanguageModelTrainer

        return LanguageModelTrainer

    def evaluate(self, run_dir: Path, request: EvaluationRequest) -> list[Score]:
        from s2s.errors import S2SError
        from s2s.tasks.language_model.scoring import evaluate_language_model

        r = request
        if any(option is not None for option in (r.src, r.ref, r.beam, r.output, r.amp)):
            raise S2SError("a language model is evaluated on a split (--split) only")
        if r.decode_overrides:
            raise S2SError("a language model is evaluated on a split (--split) only")
        return evaluate_language_model(run_dir, r.split, r.checkpoint, r.device)

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        from s2s.tasks.language_model.scoring import score_language_model_checkpoint

        return score_language_model_checkpoint(run, checkpoint, device)

    def task_line(self, task: dict[str, Any]) -> str:
        return f"{task['name']} ({task['type']})"  # one text, no source and target sides

    def layers_line(self, model: dict[str, Any]) -> str:
        from s2s.tasks.card_lines import side_cells_note

        return (
            f"embed {model['embed_size']}, hidden {model['hidden_size']}, "
            f"{model['decoder_layers']} layers, decoder only (no encoder, no attention)"
            f"{side_cells_note(model, ('decoder',))}"
        )
