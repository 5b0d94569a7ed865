"""Progress and logs: a tqdm bar on a terminal, plain periodic log lines otherwise (CI, nohup).

Library code reports through the ``s2s`` logger, so ``--quiet`` (warnings only) and
``--verbose`` (debug detail, more frequent progress lines) are one logging level, set once by
the CLI. A library user who configures no logging sees no progress bars.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # keep `s2s --help` free of torch and pydantic
    import torch

    from s2s.config import TrainConfig

LOGGER = logging.getLogger("s2s")
PLAIN_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal
VERBOSE_INTERVAL = 5.0


class _Formatter(logging.Formatter):
    """'s2s: message', with 'warning:'/'error:' in front of those levels."""

    def format(self, record: logging.LogRecord) -> str:
        level = ""
        if record.levelno >= logging.ERROR:
            level = "error: "
        elif record.levelno >= logging.WARNING:
            level = "warning: "
        return f"s2s: {level}{record.getMessage()}"


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Send log records to stderr; only the ``s2s`` logger gets the chosen level, so
    ``--verbose`` does not unleash other libraries' debug output."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    LOGGER.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def progress_enabled() -> bool:
    """Progress is information: shown when the ``s2s`` logger lets INFO through."""
    return LOGGER.isEnabledFor(logging.INFO)


def count_lines(path: Path | None) -> int | None:
    """Lines in a file (a last line without a newline counts), for a progress total; None
    for a stream, whose length is unknown."""
    if path is None:
        return None
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class TaskProgress:
    """Progress of one long operation (tokenising, decoding a file, evaluating).

    On a terminal it is a tqdm bar; otherwise it writes ``description: done/total unit``
    every ``interval`` seconds and one summary line at the end, so CI and nohup logs show
    life without a flood of carriage returns. ``total`` may be None (reading a pipe).
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        unit: str = "sentences",
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float | None = None,
        bar_format: str | None = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = progress_enabled() if enabled is None else enabled
        if interval is None:
            verbose = LOGGER.isEnabledFor(logging.DEBUG)
            interval = VERBOSE_INTERVAL if verbose else PLAIN_INTERVAL
        self.interval = interval
        self.done = 0
        self.started = self.last_line = time.perf_counter()
        self.bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=description,
                unit=f" {unit}",
                file=self.stream,
                leave=True,
                bar_format=bar_format,
            )

    def __enter__(self) -> TaskProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def update(self, count: int = 1) -> None:
        self.advance_to(self.done + count)

    def advance_to(self, done: int) -> None:
        """Set the absolute position (e.g. the lines written so far)."""
        step, self.done = done - self.done, done
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._line(f"{self._count()} {self._rate(now)}")

    def close(self) -> None:
        """Finish the bar, or write the summary line."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.enabled = False
            return
        now = time.perf_counter()
        took = f"in {now - self.started:.1f} s"
        if self.done:
            self._line(f"done, {self.done} {self.unit} {took} {self._rate(now)}")
        else:
            self._line(f"done {took}")
        self.enabled = False

    def abandon(self) -> None:
        """End without the summary line: the work stopped (an error, a closed output pipe),
        so its count is not what was done; a terminal's bar is left where it stopped."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.enabled = False

    def _count(self) -> str:
        if self.total:
            return f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        return f"{self.done} {self.unit}"

    def _rate(self, now: float) -> str:
        return f"({self.done / max(now - self.started, 1e-9):.1f} {self.unit}/s)"

    def _line(self, text: str) -> None:
        print(f"s2s: {self.description}: {text}", file=self.stream, flush=True)


class Busy:
    """For work that reports no progress of its own (sentencepiece training): elapsed time
    ticking on a terminal, a "still ..." line every ``interval`` seconds otherwise, and a
    final line either way. A daemon thread keeps time; the work must release the GIL, as
    sentencepiece's trainer does, for the display to move."""

    def __init__(
        self,
        description: str,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.progress = TaskProgress(
            description,
            None,
            "s",
            enabled=enabled,
            stream=stream,
            interval=interval,
            bar_format="{desc}: {elapsed}",
        )
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> Busy:
        if self.progress.enabled:
            if self.progress.bar is None:
                self.progress._line("started")
            self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
        if exc_type is None:
            self.progress.close()
        else:  # not "done": the error that follows says what happened
            self.progress.abandon()

    def _tick(self) -> None:
        progress = self.progress
        while not self.stopped.wait(1.0 if progress.bar is not None else progress.interval):
            if progress.bar is not None:
                progress.bar.refresh()
            else:
                seconds = time.perf_counter() - progress.started
                progress._line(f"still running after {seconds:.0f} s")


@dataclass
class _Mark:
    """The loss window's running sums when the last progress line was printed (or the
    window opened): the next line shows the difference, the steps in between."""

    step: int | None = None  # None: not yet known (set by the first update)
    loss_sum: torch.Tensor | float = 0.0
    tokens: int = 0
    seconds: float = 0.0


class TrainingProgress:
    """Shows epoch, step, loss, tokens/s and ETA; reads the loss tensor only when it prints.

    The trainer passes the running sums of its loss window, which opens at each validation;
    the loss and tokens/s shown cover the steps since the previous line (``log_every`` of
    them, fewer after a validation), and the line says how many."""

    def __init__(self, config: TrainConfig, quiet: bool = False) -> None:
        self.config = config
        self.quiet = quiet
        self.interactive = sys.stderr.isatty() and not quiet
        self.bar = None
        self.epoch = 0
        self.started = time.perf_counter()
        self.mark = _Mark()

    def start_epoch(self, epoch: int, batches: int, done: int) -> None:
        self.epoch = epoch
        if self.interactive:
            from tqdm import tqdm

            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(
                total=batches, initial=done, desc=f"epoch {epoch}", unit="batch", file=sys.stderr
            )

    def update(
        self,
        step: int,
        batches: int,
        loss_sum: torch.Tensor,
        tokens: int,
        seconds: float,
        grad_norm: torch.Tensor | None = None,
    ) -> None:
        """Advance the bar; every ``log_every`` steps show the loss and the speed over the
        steps since the last line, and the last step's gradient norm (the only time these
        device values are read). ``loss_sum``, ``tokens`` and ``seconds`` are the window's
        running sums since it opened."""
        if self.mark.step is None:
            self.mark.step = step - 1  # the step a resumed session starts after
        if self.bar is not None:
            self.bar.update(batches)
        if step % self.config.log_every:
            return
        mark = self.mark
        count = tokens - mark.tokens
        loss = float(loss_sum - mark.loss_sum) / max(count, 1)
        speed = count / max(seconds - mark.seconds, 1e-9)
        steps = step - mark.step
        self.mark = _Mark(step, loss_sum, tokens, seconds)
        norm = f"{float(grad_norm):.3g}" if grad_norm is not None else "-"
        last = f"{steps} step{'s' * (steps != 1)}"
        if self.bar is not None:
            self.bar.set_postfix(
                step=step, loss=f"{loss:.3f}", tok_s=f"{speed:.0f}", over=last, gnorm=norm
            )
        elif not self.quiet:
            minutes = (time.perf_counter() - self.started) / 60
            print(
                f"epoch {self.epoch} step {step}: loss {loss:.3f}, {speed:.0f} tok/s "
                f"(last {last}); grad norm {norm}; {minutes:.1f} min",
                file=sys.stderr,
                flush=True,
            )

    def report(self, record: dict) -> None:
        """Print a validation's scores; the trainer opens a new loss window after it."""
        self.mark = _Mark(record["step"])
        if self.quiet:
            return
        parts = [f"{k} {v}" for k, v in record.items() if k.startswith("valid_")]
        line = f"validation at step {record['step']}: " + ", ".join(parts)
        if record.get("best"):
            line += " (best)"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
