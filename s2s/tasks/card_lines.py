"""The lines a task gives the model card by default (`Task.layers_line`): an
encoder-decoder's layers and how its weights started."""

from __future__ import annotations

from typing import Any

from s2s.config import CellChoice, ModelConfig, Side


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
        f"{side_cells_note(model, ('encoder', 'decoder'))}"
    )


# the [model] keys that choose each side's cell
SIDE_CELL_KEYS = (
    "encoder_cell",
    "encoder_cell_options",
    "decoder_cell",
    "decoder_cell_options",
)


def side_cells_note(model: dict[str, Any], sides: tuple[Side, ...]) -> str:
    """Each side's cell, where a side names its own (the card's cell line shows
    `model.cell`; runs without per-side keys keep the line they always had)."""
    if all(model.get(key) is None for key in SIDE_CELL_KEYS):
        return ""
    cell_keys = ("cell", "cell_options", *SIDE_CELL_KEYS)
    config = ModelConfig.model_validate(
        {key: model[key] for key in cell_keys if model.get(key) is not None}
    )
    return "".join(f", {side} {_describe(config.side_cell(side))}" for side in sides)


def _describe(choice: CellChoice) -> str:
    options = ", ".join(f"{key}={value}" for key, value in choice.options.items())
    return f"cell {choice.name}" + (f" ({options})" if options else "")


def _init_note(model: dict[str, Any]) -> str:
    """How the model started; it decides how far a given number of steps gets (runs from
    before model.init existed read as "pytorch", how they were built)."""
    if model.get("init") == "uniform":
        return f", init uniform ±{model['init_range']:g}"
    return ", init PyTorch defaults"
