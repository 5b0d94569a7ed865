"""The JSON bodies of the task routes, their limits, and how each method's inputs reach
the model: one schema per method a task may serve (`Task.serves`)."""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from s2s.errors import S2SError

MAX_BEAM = 64  # a larger beam is refused (422): its memory grows with the beam


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def options(self) -> dict[str, Any]:
        """The decoding options: every field but the inputs."""
        return self.model_dump(exclude={"inputs"})


class TranslateBody(Body):
    """Texts to translate (translation and summarisation runs)."""

    inputs: list[str] = Field(description="One text each; an empty text gives an empty output.")
    beam: int | None = Field(None, ge=1, le=MAX_BEAM, description="default: decode.beam_size")
    nbest: int | None = Field(
        None, ge=1, le=MAX_BEAM, description="over 1: a list of outputs per input"
    )


class TranscribeBody(Body):
    """Audio files to transcribe (speech runs), each base64-encoded."""

    inputs: list[str] = Field(description="The bytes of each audio file, base64-encoded.")
    format: Literal["wav", "flac"] = "wav"
    beam: int | None = Field(None, ge=1, le=MAX_BEAM, description="default: decode.beam_size")


class GenerateBody(Body):
    """Prompts to continue (language-model runs)."""

    inputs: list[str] = Field(description="Prompts (each one line; may be empty).")
    max_tokens: int = Field(50, ge=1, le=1024)
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    beam: int = Field(0, ge=0, le=MAX_BEAM, description="over 0: beam search, not sampling")


class ScoreBody(Body):
    """Lines to score (language-model runs)."""

    inputs: list[str] = Field(description="One line each.")


@dataclass(frozen=True)
class Route:
    """A method's body schema and how its batched inputs are run and its outputs shown."""

    body: type[Body]
    run: Callable[[Any, list[Any], dict[str, Any]], list[Any]]
    show: Callable[[Any], Any] = lambda output: output
    text: bool = True  # its inputs are texts, held to --max-input-chars (audio: the body cap)


def run_method(name: str) -> Callable[[Any, list[Any], dict[str, Any]], list[Any]]:
    return lambda model, inputs, options: getattr(model, name)(inputs, **options)


def translate_texts(model: Any, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
    """`translate` as the command runs it; its per-line warnings (numbered within a merged
    batch, which would mislead) are not printed: the access log has the request."""
    from s2s.tasks.translation.streaming import WarningLimiter

    quiet = WarningLimiter(stream=io.StringIO())
    return model.translate(inputs, **options, warnings=quiet)


def transcribe_uploads(model: Any, inputs: list[Any], options: dict[str, Any]) -> list[Any]:
    """Write each upload to a private temporary file, transcribe them, delete them."""
    suffix = "." + options["format"]
    with tempfile.TemporaryDirectory(prefix="s2s-serve-") as folder:
        paths = []
        for number, data in enumerate(inputs):
            path = Path(folder) / f"{number}{suffix}"
            path.write_bytes(data)
            paths.append(str(path) if data else "")
        return model.transcribe(paths, beam=options["beam"])


def decode_uploads(texts: list[str]) -> list[bytes]:
    """The base64 audio of a transcribe body (an empty string: an empty transcript)."""
    try:
        return [base64.b64decode(text, validate=True) for text in texts]
    except (binascii.Error, ValueError):
        raise S2SError("inputs: not base64-encoded audio") from None


def show_score(score: Any) -> dict[str, Any]:
    return {
        "log_prob": score.log_prob,
        "tokens": score.tokens,
        "words": score.words,
        "ppl": score.word_ppl,
    }


ROUTES: dict[str, Route] = {
    "translate": Route(TranslateBody, translate_texts),
    "transcribe": Route(TranscribeBody, transcribe_uploads, text=False),
    "generate": Route(GenerateBody, run_method("generate")),
    "score": Route(ScoreBody, run_method("score"), show_score),
}
