"""The forecaster: an encoder of cell plugins over the context window and a decoder of cell
plugins over the horizon, with a distribution (or point) head per forecast step.

The encoder reads the scaled value and the known features of every context step; its top
output at the last step summarises the context. Each decoder step reads that summary, the
step's known features and its seasonal-naive values (the value one season back, read from
the context). ``direct``: those are all its inputs, so the whole horizon runs as one
sequence (the cells' fused kernels). ``autoregressive``: it also reads the previous value,
the true one in training (teacher forcing) and its own median at test, one step at a time.
Values are scaled per window (`scaling`) and the outputs read in that scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s.config import Config, ForecastConfig, ModelConfig
from s2s.core.cell_registry import SideCells, side_cells
from s2s.core.dropout import Dropout
from s2s.core.recurrent_stack import RecurrentStack
from s2s.tasks.forecasting.heads import OutputHead, point
from s2s.tasks.forecasting.scaling import Scale, fit_scale
from s2s.tasks.forecasting.series import feature_count
from s2s.tasks.forecasting.windows import WindowBatch, lag_periods


class Forecaster(nn.Module):
    """Context window -> per-step output parameters over the horizon (scaled space)."""

    def __init__(self, model: ModelConfig, forecast: ForecastConfig, cells: SideCells) -> None:
        super().__init__()
        self.forecast = forecast
        features = feature_count(forecast)
        hidden = model.hidden_size
        self.autoregressive = forecast.decoder == "autoregressive"
        self.encoder = RecurrentStack(
            cells.encoder, 1 + features, hidden, model.encoder_layers, dropout=model.dropout
        )
        summary = self.encoder.output_size
        decoder_inputs = summary + features + len(lag_periods(forecast)) + self.autoregressive
        self.decoder = RecurrentStack(
            cells.decoder,
            decoder_inputs,
            hidden,
            model.decoder_layers,
            dropout=model.dropout,
            residual=model.residual,
        )
        self.dropout = Dropout(model.dropout)
        self.head = OutputHead(self.decoder.output_size, forecast.loss)

    def scale_of(self, batch: WindowBatch) -> Scale:
        return fit_scale(batch.context, self.forecast.scaling)

    def _known_inputs(self, batch: WindowBatch, scale: Scale) -> Tensor:
        """Decoder inputs known before decoding [B, H, summary + F + P]."""
        context = scale.apply(batch.context).unsqueeze(-1)  # [B, C, 1]
        encoded, _ = self.encoder(torch.cat([context, batch.context_features], dim=-1))
        summary = self.dropout(encoded[:, -1])  # [B, summary]
        horizon = batch.future_features.size(1)
        summary = summary.unsqueeze(1).expand(-1, horizon, -1)
        return torch.cat([summary, batch.future_features, scale.apply(batch.lags)], dim=-1)

    def forward(self, batch: WindowBatch) -> tuple[Tensor, Scale]:
        """Raw head outputs [B, H, k] with teacher forcing (training, validation loss)."""
        scale = self.scale_of(batch)
        inputs = self._known_inputs(batch, scale)
        if self.autoregressive:
            target = scale.apply(batch.target).nan_to_num(0.0)
            last = scale.apply(batch.context[:, -1:])
            previous = torch.cat([last, target[:, :-1]], dim=1).unsqueeze(-1)
            inputs = torch.cat([inputs, previous], dim=-1)
        hidden, _ = self.decoder(inputs)
        return self.head(self.dropout(hidden)), scale

    def predict(self, batch: WindowBatch) -> tuple[Tensor, Scale]:
        """Raw head outputs [B, H, k] reading no target: one pass (direct), or one step at a
        time fed its own median (autoregressive)."""
        if not self.autoregressive:
            batch = WindowBatch(*batch.tensors()[:4], torch.full_like(batch.target, torch.nan))
            return self(batch)
        scale = self.scale_of(batch)
        inputs = self._known_inputs(batch, scale)
        states = [
            layer[0].initial_state(inputs.size(0), device=inputs.device)
            for layer in self.decoder.layers
        ]
        previous = scale.apply(batch.context[:, -1:])
        outputs = []
        for t in range(inputs.size(1)):
            step_input = torch.cat([inputs[:, t], previous], dim=-1)
            hidden, states = self.decoder.step(step_input, states)
            raw = self.head(hidden)
            outputs.append(raw)
            previous = point(raw).unsqueeze(-1).to(inputs.dtype)
        return torch.stack(outputs, dim=1), scale


def build_forecaster(config: Config) -> Forecaster:
    return Forecaster(config.model, config.forecast, side_cells(config.model))
