"""Forecasting: the next values of one or many time series from their past, as a
distribution per step; validated by its loss (and MASE), evaluated on rolling origins of
the test period beside naive, seasonal-naive and ETS baselines; served by `s2s forecast`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from s2s.errors import ConfigError
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


class ForecastingTask(Task):
    """An encoder-decoder of cell plugins over numbers (`s2s.tasks.forecasting.model`)."""

    name: ClassVar[str] = "forecasting"
    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    refusal: ClassVar[str] = "a forecasting run; use s2s forecast or s2s evaluate with it"
    forecasts: ClassVar[bool] = True

    def apply_defaults(self, config: Config) -> None:
        """A forecaster reads one series file (`path`) per split, validates by loss and
        reads its context left to right."""
        for name, split in config.data.items():
            if split.path is None:
                raise ValueError(f"data.{name}: a forecasting run reads a series file (`path`)")
        train, model = config.train, config.model
        if "early_stopping_metric" not in train.model_fields_set:
            train.early_stopping_metric = "loss"
        if "valid_decode" not in train.model_fields_set:
            train.valid_decode = False
        if "bidirectional" not in model.model_fields_set:
            model.bidirectional = False
        if model.bidirectional:
            raise ValueError("a forecaster reads its context left to right: bidirectional = false")
        if train.early_stopping_metric != "loss" or train.valid_decode:
            raise ValueError(
                "a forecasting run validates by loss: train.early_stopping_metric = 'loss' "
                "and train.valid_decode = false"
            )

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        files = {str(split.path) for split in config.data.values()}
        if len(files) > 1:
            raise ConfigError(
                "a forecasting run cuts valid and test by time from one file: "
                "every data.<split>.path names the same file"
            )
        forecast = config.forecast
        from s2s.tasks.forecasting.windows import lag_periods

        longest = max(lag_periods(forecast))
        if longest > forecast.context_length:
            raise ConfigError(
                f"forecast.context_length = {forecast.context_length}: the decoder reads the "
                f"value {longest} steps back (forecast.season_length, forecast.lags)"
            )

    def joint_vocabulary(self, config: Config) -> bool:
        return True  # no tokeniser at all: nothing to read

    def load_tokenizers(self, run_path: Path, config: Config) -> None:
        return None  # numbers in, numbers out

    def build_model(self, config: Config, tokenizers: TokenizerPair | None) -> torch.nn.Module:
        from s2s.tasks.forecasting.model import build_forecaster

        return build_forecaster(config)

    def build_meta_model(self, config: Config, cells: SideCells, vocab: int) -> torch.nn.Module:
        from s2s.tasks.forecasting.model import Forecaster

        return Forecaster(config.model, config.forecast, cells)

    def trainer_class(self) -> type[Trainer]:
        from s2s.tasks.forecasting.trainer import ForecastingTrainer

        return ForecastingTrainer

    def evaluate(self, run_dir: Path, request: EvaluationRequest) -> list[Score]:
        from s2s.errors import S2SError
        from s2s.tasks.forecasting.evaluation import evaluate_forecaster

        r = request
        if any(option is not None for option in (r.src, r.ref, r.beam, r.output, r.amp)):
            raise S2SError("a forecasting run is evaluated on a split (--split valid or test)")
        if r.decode_overrides:
            raise S2SError("a forecasting run is evaluated on a split (--split valid or test)")
        return evaluate_forecaster(run_dir, r.split, r.checkpoint, r.device)

    def score_checkpoint(self, run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
        from s2s.tasks.forecasting.validation import score_forecaster_checkpoint

        return score_forecaster_checkpoint(run, checkpoint, device)

    def task_line(self, task: dict[str, Any]) -> str:
        return f"{task['name']} ({task['type']})"

    def layers_line(self, model: dict[str, Any]) -> str:
        from s2s.tasks.card_lines import side_cells_note

        return (
            f"hidden {model['hidden_size']}, encoder {model['encoder_layers']} layers over the "
            f"context, decoder {model['decoder_layers']} layers over the horizon"
            f"{side_cells_note(model, ('encoder', 'decoder'))}"
        )
