"""What a loaded run decodes with, one engine per kind of task method: text to text
(translate), audio to text (transcribe), and a language model (generate, score). Each is
built by the task's own loader and runs the same code as its command, so `s2s.load` and
the command line cannot drift apart."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from s2s.errors import S2SError

if TYPE_CHECKING:
    import torch

    from s2s.config import Config
    from s2s.data.tokenizer import Tokenizer
    from s2s.progress import TaskProgress
    from s2s.tasks.combination import Combination
    from s2s.tasks.language_model.model import LanguageModel
    from s2s.tasks.language_model.sampling import SamplingOptions
    from s2s.tasks.language_model.scoring import Perplexity
    from s2s.tasks.speech.transcriber import Recognizer
    from s2s.tasks.translation.continuous import ContinuousTranslation
    from s2s.tasks.translation.streaming import Steering, WarningLimiter
    from s2s.tasks.translation.translator import Translator

CHUNK_LINES = 2000  # lines read, sorted and decoded together (`s2s translate --chunk-lines`)
MAX_INPUT_TOKENS = 1024  # longer sources are cut, with a warning (`--max-input-tokens`)


@dataclass(frozen=True)
class LoadOptions:
    """How to load a run: the checkpoint (None: the best), the device, the decoding
    precision (None: decode.amp) and ``decode.key=value`` changes to its [decode]."""

    checkpoint: Path | None = None
    device: str = "auto"
    amp: str | None = None
    decode_overrides: Sequence[str] = field(default_factory=tuple)
    combination: Combination | None = None  # ensemble members, a language model to fuse


@dataclass
class TextEngine:
    """Translation and the tasks built on it: text in, text out."""

    config: Config
    translator: Translator

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> TextEngine:
        from s2s.tasks.loading import load_run
        from s2s.tasks.translation.translator import Translator

        config, tokenizers, model, device = load_run(
            path,
            options.checkpoint,
            options.device,
            options.amp,
            decode_overrides=options.decode_overrides,
        )
        decoder = None
        if options.combination is not None:
            from s2s.tasks.combination import combined_decoder

            decoder = combined_decoder(
                path, model, tokenizers, options.combination, device, options.amp,
                options.decode_overrides,
            )  # fmt: skip
        return cls(config, Translator(model, tokenizers, config.decode, device, decoder))

    def search_sizes(
        self, beam: int | None, nbest: int | None, sampling: bool = False
    ) -> tuple[int, int]:
        """The beam and n-best sizes, the run's decode.beam_size and decode.nbest where not
        given; an n-best list longer than the beam is refused (samples are not beams)."""
        beam_size = beam or self.config.decode.beam_size
        nbest = nbest or self.config.decode.nbest
        if beam_size < 1 or nbest < 1:
            raise S2SError(f"beam ({beam_size}) and nbest ({nbest}) must be at least 1")
        if nbest > beam_size and not sampling:
            raise S2SError(f"--nbest {nbest} needs a beam of at least {nbest} (--beam)")
        return beam_size, nbest

    def input_tokens(self, items: Sequence[str | bytes]) -> list[int]:
        """Source tokens of each input, with its end of sentence (none for a blank one)."""
        from s2s.tasks.translation.streaming import text_lines

        ids = self.translator.encode([line.text for line in text_lines(items)])
        return [len(seq) + 1 if seq else 0 for seq in ids]

    def translate(
        self,
        items: Sequence[str | bytes],
        beam: int | None,
        nbest: int | None,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        warnings: WarningLimiter | None = None,
        steering: Steering | None = None,
    ) -> list[list[str]]:
        """n-best output texts per input, in order, decoded CHUNK_LINES at a time."""
        from s2s.tasks.translation.streaming import WarningLimiter, search_chunk, text_lines

        sampling = steering is not None and steering.strategy is not None
        beam_size, nbest = self.search_sizes(beam, nbest, sampling)
        warnings = warnings or WarningLimiter()
        lines, outputs = text_lines(items), []
        for start in range(0, len(lines), CHUNK_LINES):
            chunk = lines[start : start + CHUNK_LINES]
            _, hypotheses = search_chunk(
                self.translator, chunk, beam_size, nbest, max_input_tokens, warnings, None,
                steering,
            )  # fmt: skip
            outputs += self.translator.detokenize(hypotheses)
        warnings.summarise()
        return outputs

    def continuous(
        self, beam: int | None, nbest: int | None, max_input_tokens: int = MAX_INPUT_TOKENS
    ) -> ContinuousTranslation:
        """A search that requests join between steps (`s2s serve --continuous`)."""
        from s2s.tasks.translation.continuous import ContinuousTranslation

        beam_size, nbest = self.search_sizes(beam, nbest)
        return ContinuousTranslation(self.translator, beam_size, nbest, max_input_tokens)

    def joins_running_search(self, beam: int | None) -> bool:
        """Whether `continuous` takes this beam size and the run's decode constraints."""
        from s2s.tasks.translation.continuous import joins_running_search

        return joins_running_search(self.translator, beam or self.config.decode.beam_size)

    def translate_stream(
        self,
        source: BinaryIO,
        sink: BinaryIO,
        beam: int | None,
        nbest: int | None,
        chunk_lines: int = CHUNK_LINES,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        progress: TaskProgress | None = None,
        alignments: Path | None = None,
        steering: Steering | None = None,
    ) -> int:
        """`s2s translate`: ``source``'s lines into ``sink``, flushed chunk by chunk."""
        from s2s.tasks.translation.alignment import alignment_file
        from s2s.tasks.translation.streaming import translate_stream

        sampling = steering is not None and steering.strategy is not None
        beam_size, nbest = self.search_sizes(beam, nbest, sampling)
        with alignment_file(self.translator, alignments) as aligner:
            return translate_stream(
                self.translator,
                source,
                sink,
                beam_size,
                nbest,
                chunk_lines,
                max_input_tokens,
                progress=progress,
                alignments=aligner,
                steering=steering,
            )


@dataclass
class SpeechEngine:
    """Speech recognition: audio files in, transcripts out."""

    config: Config
    recognizer: Recognizer

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> SpeechEngine:
        from s2s.tasks.speech.transcriber import load_speech_run

        config, recognizer = load_speech_run(
            path,
            options.checkpoint,
            options.device,
            options.amp,
            decode_overrides=options.decode_overrides,
        )
        if options.combination is not None:
            recognizer.combine_with(
                path, options.combination, options.amp, options.decode_overrides
            )
        return cls(config, recognizer)

    def transcribe_stream(self, paths: Iterable[str], out: TextIO, beam: int | None) -> int:
        """`s2s transcribe`: one line per path into ``out`` (a blank path: an empty line)."""
        from s2s.tasks.speech.transcriber import transcribe_paths

        beam_size = beam or self.config.decode.beam_size
        return transcribe_paths(self.recognizer, self.config, paths, beam_size, out)

    def input_tokens(self, items: Sequence[object]) -> list[int]:
        """One per audio file: its length is known only once it is read."""
        return [1 for _ in items]

    def transcribe(self, paths: Sequence[str | Path], beam: int | None) -> list[str]:
        """One transcript per audio (or feature) file, in order."""
        out = io.StringIO()
        self.transcribe_stream([str(path) for path in paths], out, beam)
        return out.getvalue().split("\n")[: len(paths)]


@dataclass
class LanguageModelEngine:
    """A language model: prompts continued, lines scored."""

    config: Config
    tokenizer: Tokenizer
    model: LanguageModel
    device: torch.device

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> LanguageModelEngine:
        from s2s.tasks.language_model.loading import load_language_model

        if options.amp is not None or options.decode_overrides:
            raise S2SError(f"{path}: a language model decodes as trained: no amp or decode keys")
        config, tokenizer, model, device = load_language_model(
            path, options.checkpoint, options.device
        )
        return cls(config, tokenizer, model, device)

    @property
    def word_level(self) -> bool:
        return self.config.tokenizer.model_type == "word"

    def input_tokens(self, lines: Sequence[str]) -> list[int]:
        """Tokens of each line, with the end of line before and after it."""
        from s2s.tasks.language_model.data import encode_lines

        return [len(ids) + 2 for ids in encode_lines(self.tokenizer, list(lines), self.word_level)]

    def generate(self, prompts: Sequence[str], options: SamplingOptions) -> list[str]:
        """Each prompt followed by its sampled continuation (one line each)."""
        from s2s.tasks.language_model.sampling import generate_text

        options.check()
        return [
            generate_text(self.model, self.tokenizer, p, self.word_level, options, self.device)[0]
            for p in prompts
        ]

    def score(self, lines: Sequence[str]) -> list[Perplexity]:
        """Each line's log-probability (with its end of line), tokens and words."""
        from s2s.tasks.language_model.scoring import score_lines

        return score_lines(self.model, self.tokenizer, list(lines), self.word_level, self.device)


# the engine that serves each method a task may name in Task.serves
ENGINES: dict[str, type[TextEngine | SpeechEngine | LanguageModelEngine]] = {
    "translate": TextEngine,
    "transcribe": SpeechEngine,
    "generate": LanguageModelEngine,
    "score": LanguageModelEngine,
}
