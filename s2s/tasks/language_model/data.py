"""Language-model data: a text file becomes one contiguous token stream, cut into parallel
streams and then into truncated-BPTT windows.

Every line of the file ends with an end-of-sentence token (EOS), empty lines included, as
in the PTB and WikiText literature: the stream holds ``tokens of each line + EOS``. The
word count that word-level perplexity divides by is, the same way, the whitespace-separated
words of each line plus one per line end.
"""

from __future__ import annotations

import json
import logging
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from s2s.atomic import atomic_write_bytes
from s2s.config import Config
from s2s.data.corpus import open_compressed
from s2s.data.tokenizer import (
    EOS_ID,
    Tokenizer,
    load_tokenizers,
    tokenizer_files,
    train_tokenizers,
)
from s2s.errors import S2SError
from s2s.run.directory import RunDir

# encode_lines lives apart from torch (an exported model encodes prompts with it too)
from s2s.tasks.language_model.text import encode_lines as encode_lines

log = logging.getLogger(__name__)

# sentencepiece skips training sentences longer than this many bytes (its default 4192);
# WikiText paragraphs are longer, so tokeniser training sees them in pieces.
_TRAINING_CHUNK_BYTES = 2000


def decode_lines(raw_lines: Iterator[bytes], origin: str) -> list[str]:
    """Decode byte lines as UTF-8 without their line ends; a bad line is a one-line error."""
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as error:
            raise S2SError(f"{origin}: line {number} is not UTF-8 (byte {error.start})") from None
    return lines


def read_text_lines(path: Path, split: str) -> list[str]:
    """All lines of a (possibly .gz/.xz-compressed) text file."""
    try:
        with open_compressed(path) as handle:
            lines = decode_lines(iter(handle), str(path))
    except (OSError, EOFError, lzma.LZMAError) as error:
        raise S2SError(f"data.{split}.text: {path}: cannot read: {error}") from None
    if not any(line.strip() for line in lines):
        raise S2SError(f"data.{split}.text: {path}: no text")
    return lines


def split_text(config: Config, split: str) -> Path:
    """The text file of a language-model split."""
    if split not in config.data:
        known = ", ".join(sorted(config.data))
        raise S2SError(f"the recipe has no split {split!r} (splits: {known})")
    path = config.data[split].text
    if path is None:
        raise S2SError(f"data.{split}: a language model reads a `text` file")
    return path


def count_words(lines: list[str]) -> int:
    """Words as the literature counts them: whitespace-separated, plus one EOS per line."""
    return sum(len(line.split()) + 1 for line in lines)


@dataclass
class TokenStream:
    """One split as a single stream of ids (each line followed by EOS)."""

    ids: Tensor  # N, long
    lines: int
    words: int  # see `count_words`

    @property
    def tokens(self) -> int:
        return self.ids.numel()


def to_stream(tokenizer: Tokenizer, lines: list[str], word_level: bool) -> TokenStream:
    encoded = encode_lines(tokenizer, lines, word_level)
    flat = [token for ids in encoded for token in (*ids, EOS_ID)]
    return TokenStream(torch.tensor(flat, dtype=torch.long), len(lines), count_words(lines))


def load_stream(config: Config, split: str, tokenizer: Tokenizer) -> TokenStream:
    lines = read_text_lines(split_text(config, split), split)
    return to_stream(tokenizer, lines, config.tokenizer.model_type == "word")


def training_chunks(lines: list[str]) -> Iterator[str]:
    """Lines cut at word boundaries into pieces sentencepiece does not skip."""
    for line in lines:
        if len(line.encode("utf-8")) <= _TRAINING_CHUNK_BYTES:
            yield line
            continue
        piece: list[str] = []
        size = 0
        for word in line.split():
            if piece and size + len(word) + 1 > _TRAINING_CHUNK_BYTES:
                yield " ".join(piece)
                piece, size = [], 0
            piece.append(word)
            size += len(word.encode("utf-8")) + 1
        if piece:
            yield " ".join(piece)


def prepare_lm_tokenizer(config: Config, run: RunDir) -> Tokenizer:
    """Reuse the run's tokeniser, or train one on the training text (again when the
    recipe's [tokenizer] settings changed, as for translation)."""
    model_file = tokenizer_files(run.path, joint=True)[0]
    wanted = config.tokenizer.model_dump(mode="json")
    settings = run.path / "tokenizer.json"
    if model_file.is_file():
        saved = json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else wanted
        if saved == wanted:
            return load_tokenizers(run.path, joint=True).src
        log.info("tokenizer settings changed: training a new tokenizer")
    lines = read_text_lines(split_text(config, "train"), "train")
    tokenizer = train_tokenizers(config.tokenizer, list(training_chunks(lines)), [], run.path).src
    atomic_write_bytes(settings, json.dumps(wanted, indent=1).encode("utf-8"))
    return tokenizer


# -- batching ----------------------------------------------------------------------------
def batchify(ids: Tensor, streams: int) -> Tensor:
    """Cut a stream into ``streams`` contiguous rows [streams, N // streams]; row b is the
    b-th stretch of the text, so consecutive windows of a row continue each other. The
    last N % streams tokens are dropped (as every TBPTT implementation does)."""
    length = ids.numel() // streams
    if length < 2:
        raise S2SError(
            f"{ids.numel()} tokens are too few for train.streams = {streams} "
            "(each stream needs at least 2 tokens)"
        )
    return ids[: length * streams].view(streams, length)


def window_count(grid: Tensor, bptt: int) -> int:
    """How many windows of ``bptt`` inputs (the last may be shorter) a grid holds."""
    return -(-(grid.size(1) - 1) // bptt)


@dataclass
class StreamBatch:
    """Window ``index`` of a stream grid: inputs and next-token targets, both [B, T]."""

    index: int
    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device) -> StreamBatch:
        return StreamBatch(
            self.index,
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
        )

    @property
    def num_tgt_tokens(self) -> int:
        return self.targets.numel()


def window(grid: Tensor, index: int, bptt: int) -> StreamBatch:
    """The ``index``-th TBPTT window: columns [index*bptt, index*bptt + T) and the targets
    one token later."""
    start = index * bptt
    stop = min(start + bptt, grid.size(1) - 1)
    return StreamBatch(index, grid[:, start:stop], grid[:, start + 1 : stop + 1])
