"""`s2s translate` as a stream: one output line per input line whatever the bytes, output
before the input ends, bounded memory, long lines cut, a closed pipe ends it quietly."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2s.progress import Busy, TaskProgress
from s2s.tasks.loading import load_run
from s2s.tasks.translation.streaming import LineReader, WarningLimiter, translate_stream
from s2s.tasks.translation.translator import Translator


class Trickle(io.RawIOBase):
    """A stream without a descriptor that returns its data in pieces of the given sizes,
    like a pipe fed slowly."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.position, self.calls = data, sizes, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        piece = self.sizes[self.calls % len(self.sizes)]
        self.calls += 1
        out = self.data[self.position : self.position + min(piece, size)]
        self.position += len(out)
        return out


def expected_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def read_all(data: bytes, limit: int, sizes: list[int], chunk: int = 3) -> list:
    reader = LineReader(Trickle(data, sizes), limit)
    return [line for part in reader.chunks(chunk) for line in part]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300)
    | st.lists(st.text(max_size=30), max_size=12).map(lambda t: "\n".join(t).encode()),
    limit=st.integers(4, 40),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5),
)
def test_reader_yields_one_line_per_input_line(data: bytes, limit: int, sizes: list[int]) -> None:
    lines = read_all(data, limit, sizes)
    raw = expected_lines(data)
    assert [line.number for line in lines] == list(range(1, len(raw) + 1))
    for line, source in zip(lines, raw, strict=True):
        assert "\n" not in line.text
        assert line.cut == (len(source) > limit)
        kept = source[:limit] if line.cut else source.removesuffix(b"\r")
        if not line.invalid_utf8:
            assert kept.startswith(line.text.encode())
            assert line.cut or line.text.encode() == kept
        else:
            assert line.text == kept.decode("utf-8", errors="replace")


def test_reader_cuts_long_lines_at_a_character_boundary() -> None:
    data = "ééééééé\nshor\r\nlast".encode()  # the CR counts: 5 bytes, kept whole
    lines = read_all(data, 5, [4])
    assert [(line.text, line.cut) for line in lines] == [
        ("éé", True),
        ("shor", False),
        ("last", False),
    ]


def test_reader_yields_what_a_pipe_holds_without_waiting_for_more() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"one\ntwo\nthree\n")
    reader = LineReader(os.fdopen(read_end, "rb", buffering=0), 100)
    got: list = []
    thread = threading.Thread(target=lambda: got.append(next(reader.chunks(1000))), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert got and [line.text for line in got[0]] == ["one", "two", "three"]
    os.close(write_end)


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    config, tokenizers, model, device = load_run(trained_run, None, "cpu")
    config.decode.max_length_offset = 3  # short outputs: these tests are about lines
    return Translator(model, tokenizers, config.decode, device)


LINE_PIECES = st.sampled_from(
    [
        b"A dog runs.",
        b"",
        b"   ",
        b"\r",
        b"\xff\xfe",
        b"\xe2\x80\xa8",
        b"\x0b\x0c\x1c",
        b"\x00",
        "Zwei Männer 🙂".encode(),
        b"x" * 90,
        b"\t",
    ]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.lists(LINE_PIECES, max_size=3).map(b"".join), max_size=8),
    final_newline=st.booleans(),
)
def test_translate_stream_keeps_one_output_line_per_input_line(
    translator: Translator, lines: list[bytes], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    sink = io.BytesIO()
    count = translate_stream(
        translator, io.BytesIO(data), sink, 1, 1, 3, 8, WarningLimiter(io.StringIO())
    )
    assert count == len(expected_lines(data))
    output = sink.getvalue()
    assert output.count(b"\n") == count and (not output or output.endswith(b"\n"))
    for source, hyp in zip(expected_lines(data), output.split(b"\n"), strict=False):
        if not source.strip():
            assert hyp == b""


def s2s_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "s2s", *args]


def read_lines_from(process: subprocess.Popen, wanted: int, timeout: float) -> int:
    """Read stdout until ``wanted`` lines arrived (or the timeout); returns lines seen."""
    assert process.stdout is not None
    fd, seen, deadline = process.stdout.fileno(), 0, time.monotonic() + timeout
    while seen < wanted and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            seen += data.count(b"\n")
    return seen


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_100k_lines_stream_with_bounded_memory(trained_run: Path, tmp_path: Path) -> None:
    """100 000 lines through a pipe: the first results arrive while the input is still open,
    every line gets its output, and the peak RSS after all of them is within a few MiB of
    the peak after the first 2 000 (reading all input first would hold ~100 000 lines plus
    their token lists)."""
    total, first = 100_000, 2_000
    words = ["A dog", "Two men", "A girl in red", "People walk", "A cat sleeps"]
    lines = [f"{words[i % 5]} {i}.\n".encode() for i in range(total)]
    with (tmp_path / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            s2s_command("translate", str(trained_run), "--beam", "1", "-q"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert process.stdin is not None
        process.stdin.write(b"".join(lines[:first]))
        process.stdin.flush()
        assert read_lines_from(process, first, timeout=60) == first  # input still open
        early_peak = peak_rss_kib(process.pid)

        def feed() -> None:
            assert process.stdin is not None
            process.stdin.write(b"".join(lines[first:]))
            process.stdin.flush()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        assert read_lines_from(process, total - first, timeout=120) == total - first
        writer.join(timeout=10)
        late_peak = peak_rss_kib(process.pid)
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    assert late_peak - early_peak < 40 * 1024, (early_peak, late_peak)


def translate_into_a_closed_pipe(run: Path, *flags: str, more: list[bytes]) -> str:
    """`s2s translate RUN --beam 1 FLAGS` whose reader goes away after the first line (like
    `| head -1`) while ``more`` input is still written; its stderr, after it exited 0."""
    process = subprocess.Popen(
        s2s_command("translate", str(run), "--beam", "1", *flags),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"A dog.\n")
    process.stdin.flush()
    assert process.stdout.readline()
    process.stdout.close()  # one line was written; the next chunk cannot be
    try:
        for chunk in more:
            process.stdin.write(chunk)
            process.stdin.flush()
        process.stdin.close()
    except BrokenPipeError:
        pass  # it already stopped
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    return process.stderr.read().decode()


def test_a_closed_output_pipe_ends_quietly(trained_run: Path) -> None:
    stderr = translate_into_a_closed_pipe(
        trained_run, "-q", more=[b"A man rides a bicycle.\n" * 50] * 200
    )
    assert "Traceback" not in stderr and "error" not in stderr.lower()


def test_a_closed_output_pipe_claims_no_lines_it_did_not_write(trained_run: Path) -> None:
    """`| head -1` with progress lines on: the lines decoded but never written are not
    reported as done (nothing is: the end is quiet)."""
    stderr = translate_into_a_closed_pipe(trained_run, more=[b"A man rides a bicycle.\n" * 500])
    assert "done" not in stderr and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("kind", ["task", "busy"])
def test_progress_says_done_only_when_the_work_finished(kind: str) -> None:
    stream = io.StringIO()

    def progress():
        if kind == "task":
            return TaskProgress("translating", None, "lines", enabled=True, stream=stream)
        return Busy("training the tokenizer", enabled=True, stream=stream)

    with pytest.raises(BrokenPipeError), progress() as shown:
        if kind == "task":
            shown.update(2000)  # decoded, never written
        raise BrokenPipeError
    assert "done" not in stream.getvalue()
    with progress() as shown:
        if kind == "task":
            shown.update(3)
    assert "done" in stream.getvalue()


def test_a_huge_line_is_truncated_with_a_warning(trained_run: Path) -> None:
    huge = b"dog " * 2_000_000  # 8 MB on one line
    result = subprocess.run(
        s2s_command("translate", str(trained_run), "--beam", "1", "--max-input-tokens", "20"),
        input=b"A man.\n" + huge + b"\nA cat.\n",
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.count(b"\n") == 3
    assert "input line 2: longer than 20 tokens, truncated" in result.stderr.decode()


def test_only_blank_lines(trained_run: Path) -> None:
    result = subprocess.run(
        s2s_command("translate", str(trained_run)), input=b"\n  \n\n", capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"\n\n\n"


def test_many_bad_lines_warn_a_few_times_then_count() -> None:
    stream = io.StringIO()
    warnings = WarningLimiter(stream, limit=2)
    for number in range(1, 6):
        warnings.warn("invalid UTF-8 replaced", number, "invalid UTF-8 replaced")
    warnings.summarise()
    assert stream.getvalue().splitlines() == [
        "s2s: warning: input line 1: invalid UTF-8 replaced",
        "s2s: warning: input line 2: invalid UTF-8 replaced",
        "s2s: warning: 5 input lines in all: invalid UTF-8 replaced",
    ]
