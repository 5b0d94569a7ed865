"""The lines a task gives the model card by default (`Task.layers_line`): an
encoder-decoder's layers and how its weights started."""

from __future__ import annotations

from typing import Any


def seq2seq_layers_line(model: dict[str, Any]) -> str:
    """The layers line of an encoder-decoder's card (`Task.layers_line`'s default)."""
    return (
        f"embed {model['embed_size']}, hidden {model['hidden_size']}, encoder "
        f"{model['encoder_layers']}{' bidirectional' if model['bidirectional'] else ''}, "
        f"decoder {model['decoder_layers']}, {model['attention']} attention"
        f"{', input feeding' if model['input_feeding'] else ''}"
        f"{', copy' if model.get('copy') else ''}"
        f"{f', sources cut to {limit} tokens' if (limit := model.get('max_source_length')) else ''}"
        f"{_init_note(model)}"
    )


def _init_note(model: dict[str, Any]) -> str:
    """How the model started; it decides how far a given number of steps gets (runs from
    before model.init existed read as "pytorch", how they were built)."""
    if model.get("init") == "uniform":
        return f", init uniform ±{model['init_range']:g}"
    return ", init PyTorch defaults"
