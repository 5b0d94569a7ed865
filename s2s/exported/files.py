"""What an exported directory holds, and reading its config: shared by the exporter that
writes it and the runner that reads it (no torch here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from s2s.config import AudioConfig, DecodeConfig
from s2s.errors import S2SError

CONFIG_FILE = "s2s-export.json"
FORMAT = "s2s-onnx"
VERSION = 1
STEP_FILE = "decoder_step.onnx"
ENCODER_FILE = "encoder.onnx"
# What the graphs are: an encoder and a step (translation, summarisation), or a step only
ENCODER_DECODER, DECODER_ONLY = "encoder-decoder", "decoder-only"


def bucket_file(length: int) -> str:
    """The encoder graph for sources padded to ``length`` tokens (cells that loop in Python)."""
    return f"encoder.{length}.onnx"


def is_exported(path: Path) -> bool:
    """Whether ``path`` is a directory written by `s2s export`."""
    return (path / CONFIG_FILE).is_file()


@dataclass
class ExportConfig:
    """The JSON config beside the graphs (docs/export.md lists its keys)."""

    task: str
    src_tokenizer: str
    tgt_tokenizer: str
    decode: DecodeConfig
    state_count: int
    encoder_buckets: list[int]  # empty: one encoder graph for any source length
    max_source_length: int
    precision: str
    cells: dict[str, str]
    graphs: str = ENCODER_DECODER  # or DECODER_ONLY (a language model): a step graph only
    state_shapes: list[list[int]] = field(default_factory=list)  # language model: zero start
    word_level: bool = False  # language model: a word vocabulary (prompts split on spaces)
    audio: AudioConfig | None = None  # speech: the features the encoder reads
    ctc: bool = False  # speech: the encoder also outputs CTC log-probabilities

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "task": self.task,
            "tokenizers": {"src": self.src_tokenizer, "tgt": self.tgt_tokenizer},
            "decode": self.decode.model_dump(mode="json"),
            "state_count": self.state_count,
            "encoder_buckets": self.encoder_buckets,
            "max_source_length": self.max_source_length,
            "precision": self.precision,
            "cells": self.cells,
            "graphs": self.graphs,
            "state_shapes": self.state_shapes,
            "word_level": self.word_level,
            "audio": self.audio.model_dump(mode="json") if self.audio else None,
            "ctc": self.ctc,
        }


def read_export_config(folder: Path) -> ExportConfig:
    """The config of an exported directory; anything malformed is one line naming the file."""
    path = folder / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise S2SError(f"{path}: cannot read the export config: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise S2SError(f"{path}: not an s2s export config (format is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise S2SError(f"{path}: export version {data.get('version')!r}; this s2s reads {VERSION}")
    try:
        return ExportConfig(
            task=str(data["task"]),
            src_tokenizer=str(data["tokenizers"]["src"]),
            tgt_tokenizer=str(data["tokenizers"]["tgt"]),
            decode=DecodeConfig(**data["decode"]),
            state_count=int(data["state_count"]),
            encoder_buckets=[int(n) for n in data["encoder_buckets"]],
            max_source_length=int(data["max_source_length"]),
            precision=str(data["precision"]),
            cells=dict(data["cells"]),
            graphs=str(data.get("graphs", ENCODER_DECODER)),
            state_shapes=[[int(n) for n in shape] for shape in data.get("state_shapes", [])],
            word_level=bool(data.get("word_level", False)),
            audio=AudioConfig(**data["audio"]) if data.get("audio") else None,
            ctc=bool(data.get("ctc", False)),
        )
    except (KeyError, TypeError, ValueError, ValidationError) as error:
        reason = str(error).splitlines()[0]
        raise S2SError(f"{path}: malformed export config: {reason}") from None
