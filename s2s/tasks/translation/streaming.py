"""Streaming input for `s2s translate`: bounded memory, output as soon as input arrives.

Lines are read from the file descriptor with our own buffer, so we can tell "no more input
right now" (translate what we have and flush, so a pipe consumer sees results as they come)
from "more input is ready" (fill the chunk up to its size, for batching). Memory is bounded by
the chunk size times the longest line kept; longer lines are cut while reading. Bad input
never stops the stream: invalid UTF-8 is replaced and over-long lines are truncated, each
with a warning naming the line.
"""

from __future__ import annotations

import codecs
import os
import select
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, TextIO

from s2s.errors import S2SError

if TYPE_CHECKING:  # not imported at run time: the exported-model runner (no torch) uses this
    from s2s.core.search import Hypothesis, SearchStrategy
    from s2s.progress import TaskProgress
    from s2s.tasks.translation.alignment import AlignmentWriter
    from s2s.tasks.translation.translator import Translator

BYTES_PER_TOKEN = 32  # generous: a subword is rarely more than a few characters
READ_SIZE = 1 << 16


@dataclass(frozen=True)
class InputLine:
    number: int  # 1-based line number in the input
    text: str
    cut: bool = False  # longer than the reader's byte limit
    invalid_utf8: bool = False


def decode_line(raw: bytes, number: int, cut: bool) -> InputLine:
    """UTF-8 text of one line without its line break; a cut line drops a split last char."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not cut)
        return InputLine(number, text, cut)
    except UnicodeDecodeError:
        return InputLine(number, raw.decode("utf-8", errors="replace"), cut, invalid_utf8=True)


class LineReader:
    """Reads lines of at most ``max_line_bytes`` from a binary stream, in adaptive chunks."""

    def __init__(self, stream: BinaryIO, max_line_bytes: int) -> None:
        self.stream = stream
        self.max_line_bytes = max_line_bytes
        try:
            self.fd: int | None = stream.fileno()
        except (OSError, AttributeError, ValueError):  # e.g. BytesIO in tests
            self.fd = None
        self.buffer = bytearray()
        self.parsed: deque[InputLine] = deque()
        self.count = 0
        self.discarding = False  # inside the unread tail of a cut line
        self.eof = False

    def _ready(self) -> bool:
        """True if a read would not block (files always; pipes and terminals when fed)."""
        if self.fd is None:
            return True
        try:
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _read(self) -> bytes:
        if self.fd is not None:
            return os.read(self.fd, READ_SIZE)
        return self.stream.read(READ_SIZE)

    def _emit(self, raw: bytes, cut: bool) -> None:
        self.count += 1
        self.parsed.append(decode_line(raw, self.count, cut))

    def _split(self) -> None:
        """Move complete lines from the buffer to ``parsed``; cut a line that grows too long."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if self.discarding:
                if end < 0:
                    start = len(self.buffer)
                    break
                self.discarding, start = False, end + 1
                continue
            if end >= 0 and end - start <= self.max_line_bytes:
                self._emit(bytes(self.buffer[start : end + 1]), cut=False)
                start = end + 1
            elif end >= 0 or len(self.buffer) - start > self.max_line_bytes:
                self._emit(bytes(self.buffer[start : start + self.max_line_bytes]), cut=True)
                start += self.max_line_bytes
                self.discarding = True
            else:
                break
        del self.buffer[:start]

    def _fill(self) -> None:
        data = self._read()
        if not data:
            self.eof = True
            if self.buffer and not self.discarding:
                self._emit(bytes(self.buffer), cut=False)
            self.buffer.clear()
            return
        self.buffer += data
        self._split()

    def chunks(self, max_lines: int) -> Iterator[list[InputLine]]:
        """Chunks of up to ``max_lines`` lines; a short chunk whenever input pauses."""
        chunk: list[InputLine] = []
        while True:
            while self.parsed and len(chunk) < max_lines:
                chunk.append(self.parsed.popleft())
            if len(chunk) >= max_lines or (chunk and (self.eof or not self._ready())):
                yield chunk
                chunk = []
            elif self.eof:
                return
            else:
                self._fill()


@dataclass
class WarningLimiter:
    """Warn per line for the first few lines of each kind, then once with a count."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    limit: int = 10
    counts: dict[str, int] = field(default_factory=dict)

    def warn(self, kind: str, number: int, message: str) -> None:
        seen = self.counts[kind] = self.counts.get(kind, 0) + 1
        if seen <= self.limit:
            print(f"s2s: warning: input line {number}: {message}", file=self.stream, flush=True)

    def summarise(self) -> None:
        for kind, seen in self.counts.items():
            if seen > self.limit:
                print(f"s2s: warning: {seen} input lines in all: {kind}", file=self.stream)


def clip_tokens(
    chunk: list[InputLine], ids: list[list[int]], max_tokens: int, warnings: WarningLimiter
) -> list[list[int]]:
    """Report bad lines of a chunk and cut sources to ``max_tokens`` tokens."""
    clipped = []
    for line, seq in zip(chunk, ids, strict=True):
        if line.invalid_utf8:
            warnings.warn("invalid UTF-8 replaced", line.number, "invalid UTF-8 replaced")
        if line.cut or len(seq) > max_tokens:
            warnings.warn("truncated", line.number, f"longer than {max_tokens} tokens, truncated")
            seq = seq[:max_tokens]
        clipped.append(seq)
    return clipped


@dataclass(frozen=True)
class Steering:
    """What steers search beyond the beam and n-best sizes: a strategy that replaces beam
    search (sampling), and forced target prefixes, one text per input line (line N takes
    ``prefixes[N - 1]``; an empty one forces nothing)."""

    strategy: SearchStrategy | None = None
    prefixes: Sequence[str] | None = None

    def prefix_texts(self, chunk: list[InputLine]) -> list[str] | None:
        """The prefixes of a chunk's lines; an input line without one is an error."""
        if self.prefixes is None:
            return None
        have = len(self.prefixes)
        missing = next((line.number for line in chunk if line.number > have), None)
        if missing is not None:
            raise S2SError(
                f"--prefix-file has {have} lines: none for input line {missing} "
                "(one prefix per input line, empty for none)"
            )
        return [self.prefixes[line.number - 1] for line in chunk]


def source_ids(
    translator: Translator, chunk: list[InputLine], max_input_tokens: int, warnings: WarningLimiter
) -> list[list[int]]:
    """Source token ids of a chunk's lines, cut to ``max_input_tokens``, with a warning for
    each bad line: how `s2s translate`, `s2s.load(...).translate` and continuous batching
    all read their inputs."""
    encoded = translator.encode([line.text for line in chunk])
    return clip_tokens(chunk, encoded, max_input_tokens, warnings)


def search_chunk(
    translator: Translator,
    chunk: list[InputLine],
    beam_size: int,
    nbest: int,
    max_input_tokens: int,
    warnings: WarningLimiter,
    on_batch: Callable[[int], None] | None = None,
    steering: Steering | None = None,
) -> tuple[list[list[int]], list[list[Hypothesis]]]:
    """The source ids (cut to ``max_input_tokens``) and n-best hypotheses of one chunk of
    lines: what `s2s translate` does with each chunk of a file and `s2s.load(...).translate`
    with each chunk of a list, so the two cannot differ."""
    ids = source_ids(translator, chunk, max_input_tokens, warnings)
    options = None
    if steering is not None:
        from s2s.tasks.translation.translator import SearchOptions

        prefix_texts = steering.prefix_texts(chunk)
        prefixes = None if prefix_texts is None else translator.encode_prefixes(prefix_texts)
        options = SearchOptions(prefixes, steering.strategy)
    return ids, translator.hypotheses(ids, beam_size, nbest, on_batch, options)


def text_lines(items: Sequence[str | bytes]) -> list[InputLine]:
    """Input lines from a list of texts, numbered from 1: bytes are read as `s2s translate`
    reads a file's lines (invalid UTF-8 replaced, with a warning), and a str holding lone
    surrogates (which cannot be UTF-8) is treated the same way."""
    lines = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, bytes):
            lines.append(decode_line(item, number, cut=False))
            continue
        try:
            item.encode("utf-8")
            lines.append(InputLine(number, item))
        except UnicodeEncodeError:
            raw = item.encode("utf-8", errors="surrogatepass")
            lines.append(InputLine(number, raw.decode("utf-8", "replace"), invalid_utf8=True))
    return lines


def format_outputs(outputs: list[list[str]], nbest: int, offset: int) -> bytes:
    """One line per input (or ``nbest`` 'i ||| text' rows); line breaks inside a hypothesis
    would break the line-for-line contract, so they become spaces."""
    rows = []
    for index, hyps in enumerate(outputs):
        for hyp in hyps if nbest > 1 else hyps[:1]:
            text = " ".join(hyp.splitlines())
            rows.append(f"{offset + index} ||| {text}" if nbest > 1 else text)
    return "".join(row + "\n" for row in rows).encode("utf-8")


def translate_stream(
    translator: Translator,
    source: BinaryIO,
    sink: BinaryIO,
    beam_size: int,
    nbest: int,
    chunk_lines: int,
    max_input_tokens: int,
    warnings: WarningLimiter | None = None,
    progress: TaskProgress | None = None,
    alignments: AlignmentWriter | None = None,
    steering: Steering | None = None,
) -> int:
    """Translate ``source`` line by line into ``sink``, flushing after every chunk; returns
    the number of lines. A reader that goes away raises BrokenPipeError to the caller.
    ``progress`` counts lines; ``alignments`` gets each chunk's attention."""
    warnings = warnings or WarningLimiter()
    reader = LineReader(source, max(max_input_tokens * BYTES_PER_TOKEN, 4096))
    done = 0
    on_batch = progress.update if progress is not None else None
    for chunk in reader.chunks(chunk_lines):
        ids, hypotheses = search_chunk(
            translator, chunk, beam_size, nbest, max_input_tokens, warnings, on_batch, steering
        )
        sink.write(format_outputs(translator.detokenize(hypotheses), nbest, done))
        sink.flush()
        if alignments is not None:
            alignments.write(ids, hypotheses)
        done += len(chunk)
        if progress is not None:
            progress.advance_to(done)  # blank lines are not searched but count
    warnings.summarise()
    return done


def silence_stdout() -> None:
    """After a closed output pipe: point stdout at /dev/null so that the interpreter's final
    flush does not report the broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
