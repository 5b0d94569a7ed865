"""Training a forecaster: the core training loop (`s2s.train.trainer.Trainer`) over
shuffled windows of the training period; validation is the loss over the rolling origins
of the validation period, with its MASE logged beside it."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from s2s.run.about import record_session_data
from s2s.tasks.forecasting.heads import head_loss
from s2s.tasks.forecasting.series import read_series
from s2s.tasks.forecasting.validation import split_windows, validation_scores
from s2s.tasks.forecasting.windows import WindowBatch, collate_windows, in_batches, period_start
from s2s.tasks.registry import find_task
from s2s.tasks.task import Task
from s2s.train.trainer import Trainer


class ForecastingTrainer(Trainer):
    """`Trainer` with the forecasting task hooks."""

    loss_is_cross_entropy = False  # a negative log density (or MSE) of real numbers

    def _default_task(self) -> Task:
        return find_task(self.config.task.type)

    def _prepare_data(self) -> None:
        config = self.config
        self.tokenizers = None  # numbers in, numbers out
        self.series = read_series(Path(config.data["train"].path), config.forecast)
        self.train_windows = split_windows(self.series, config, "train")
        self.valid_windows = split_windows(self.series, config, "valid")
        self.last_mase: float | None = None

    def _tokenizer_files(self) -> set[Path]:
        return set()

    def _build_model(self) -> torch.nn.Module:
        return self.task.build_model(self.config, None)  # type: ignore[arg-type]

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """Window numbers shuffled by seed and epoch (resume rebuilds the same order)."""
        order = list(range(len(self.train_windows)))
        random.Random(self.config.train.seed * 100_003 + epoch).shuffle(order)
        return in_batches(order, self.config.forecast.batch_size)

    def _windows(self, pairs: list[tuple[int, int]]) -> WindowBatch:
        return collate_windows([(self.series[n], o) for n, o in pairs], self.config.forecast)

    def _collate(self, indices: list[int]) -> WindowBatch:  # type: ignore[override]
        return self._windows([self.train_windows[i] for i in indices])

    def _batch_loss(self, batch: WindowBatch) -> torch.Tensor:  # type: ignore[override]
        with self.autocast():
            raw, scale = self.train_model(batch)
        return head_loss(raw, scale.apply(batch.target), self.config.forecast.loss)

    def validation_loss(self) -> tuple[float, int]:
        """Mean loss per value over the validation windows (teacher-forced, as training),
        and the MASE of the medians forecast without reading the targets."""
        result = validation_scores(self.model, self.series, self.config, self.device, self.autocast)
        self.last_mase = result.mase
        return result.loss, result.values

    def _loss_scores(self) -> dict[str, float]:
        return {} if self.last_mase is None else {"valid_mase": round(self.last_mase, 4)}

    def _record_session(self) -> None:
        config = self.config.forecast

        def summary(split: str, windows: list) -> dict[str, int]:
            values = sum(
                period_start(len(s), config, "valid" if split == "train" else "test")
                - period_start(len(s), config, split)
                for s in self.series
            )
            return {"series": len(self.series), "values": values, "windows": len(windows)}

        data = {
            "train": summary("train", self.train_windows),
            "valid": summary("valid", self.valid_windows),
        }
        record_session_data(self.run, self.progress.step, data)
