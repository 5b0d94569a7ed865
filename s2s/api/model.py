"""`s2s.load`: a trained run of any task, loaded once through its task, with the methods
that task offers (`Task.serves`). The decoding commands (`s2s translate`, `transcribe`,
`generate`, `score`) and `s2s serve` call this too.

Example, with ``run_dir`` a translation run (the tests run these examples against a tiny
one):

>>> import s2s
>>> model = s2s.load(run_dir, device="cpu", threads=1)
>>> model.methods
('translate',)
>>> outputs = model.translate(["A man is riding a bicycle.", "", "Two dogs play."], beam=2)
>>> len(outputs), outputs[1]
(3, '')
>>> model.generate("A man")
Traceback (most recent call last):
s2s.errors.S2SError: ...: a translation run offers translate, not generate
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from s2s.api.engines import ENGINES, LoadOptions
from s2s.errors import S2SError

if TYPE_CHECKING:
    from s2s.progress import TaskProgress
    from s2s.tasks.combination import Combination
    from s2s.tasks.language_model.scoring import Perplexity
    from s2s.tasks.task import Task
    from s2s.tasks.translation.continuous import ContinuousTranslation
    from s2s.tasks.translation.streaming import Steering, WarningLimiter

Decode = Mapping[str, Any] | Sequence[str] | None


def decode_overrides(decode: Decode) -> list[str]:
    """``decode.key=value`` strings from ``{"key": value}`` (or such strings, as given)."""
    if decode is None:
        return []
    if isinstance(decode, Mapping):
        import tomli_w

        return [
            f"decode.{key}={tomli_w.dumps({'v': value}).partition('=')[2].strip()}"
            for key, value in decode.items()
        ]
    return list(decode)


def load(
    run_dir: str | Path | Sequence[str | Path],
    *,
    device: str = "auto",
    threads: int | None = None,
    checkpoint: str | Path | None = None,
    amp: str | None = None,
    decode: Decode = None,
    lm: str | Path | None = None,
    lm_weight: float = 0.3,
) -> Model:
    """Load the run in ``run_dir`` for decoding, through its task.

    ``device``: auto, cpu or cuda; ``threads``: torch's CPU threads (for the whole process;
    None leaves torch's default); ``checkpoint``: a checkpoint file (None: the best);
    ``amp``: auto, bf16, fp16, off or int8 (None: the run's decode.amp); ``decode``: changes
    to the run's [decode] settings, as ``--set decode.key=value`` does, e.g.
    ``{"length_penalty": 0.6, "batch_tokens": 4000}``.

    Text and speech runs: a list of run directories decodes them as an ensemble (their
    next-token probabilities averaged; one vocabulary), whose first run gives the config
    and the checkpoint choice; ``lm``, a language model of the target vocabulary, is added
    to the search with weight ``lm_weight`` (shallow fusion)."""
    from s2s.config import DECODE_AMP_CHOICES, read_saved_config
    from s2s.run.directory import RunDir
    from s2s.tasks.registry import find_task

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if amp is not None and amp not in DECODE_AMP_CHOICES:
        raise S2SError(f"amp {amp!r}: use one of {', '.join(DECODE_AMP_CHOICES)}")
    paths = [Path(run_dir)] if isinstance(run_dir, str | Path) else [Path(p) for p in run_dir]
    if not paths:
        raise S2SError("s2s.load needs a run directory")
    path = paths[0]
    task = find_task(read_saved_config(RunDir(path).require().config_file).task.type)
    engine_class = next((ENGINES[m] for m in task.serves if m in ENGINES), None)
    if engine_class is None:
        raise S2SError(f"{path}: a {task.name} run offers no method s2s.load knows")
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    combination = combine(task, paths, lm, lm_weight)
    options = LoadOptions(checkpoint, device, amp, decode_overrides(decode), combination)
    return Model(path, task, engine_class.load(path, options))


def combine(
    task: Task, paths: Sequence[Path], lm: str | Path | None, lm_weight: float
) -> Combination | None:
    """The other runs a text run decodes with (None: alone); other tasks take none."""
    if len(paths) == 1 and lm is None:
        return None
    if not {"translate", "transcribe"} & set(task.serves):
        raise S2SError(
            f"{paths[0]}: ensembles and --lm are for text and speech runs, not {task.name} runs"
        )
    if not (lm_weight >= 0 and lm_weight < float("inf")):
        raise S2SError(f"lm_weight {lm_weight}: use a finite weight of at least 0")
    from s2s.tasks.combination import Combination

    return Combination(tuple(paths[1:]), Path(lm) if lm is not None else None, lm_weight)


def steering(
    sample: bool,
    samples: int,
    sampling: Mapping[str, Any],
    prefixes: Sequence[str] | None,
) -> Steering | None:
    """Search beyond the beam: ``samples`` samples per input drawn with the ``sampling``
    options (temperature, top_k, top_p, seed), and forced target ``prefixes``."""
    if not sample and prefixes is None:
        return None
    from s2s.core.search import Sampling
    from s2s.tasks.translation.streaming import Steering

    strategy = None
    if sample:
        options = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": None, **sampling}
        if options["temperature"] < 0 or options["top_k"] < 0:
            raise S2SError("temperature and top_k must be at least 0")
        if not 0 < options["top_p"] <= 1:
            raise S2SError(f"top_p {options['top_p']}: use a value in (0, 1]")
        strategy = Sampling(samples=samples, **options)
    return Steering(strategy, list(prefixes) if prefixes is not None else None)


class Model:
    """A loaded run. Its methods take a list and return a list of the same length, in the
    same order; a method its task does not offer is a one-line `S2SError` naming the ones
    it does (`methods`)."""

    def __init__(self, path: Path, task: Task, engine: Any) -> None:
        self.path = path
        self.task = task
        self.engine = engine

    def __repr__(self) -> str:
        return f"<s2s model {self.path} ({self.task.name}: {', '.join(self.methods)})>"

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this run's task offers."""
        return self.task.serves

    @property
    def config(self) -> Any:
        """The run's config, with the [decode] changes it was loaded with."""
        return self.engine.config

    def _engine_for(self, method: str, inputs: object = ()) -> Any:
        if isinstance(inputs, str | bytes):  # would be read character by character
            raise S2SError(f"{method} takes a list of inputs, not one {type(inputs).__name__}")
        if method not in self.methods:
            offers = " and ".join(self.methods)
            raise S2SError(f"{self.path}: a {self.task.name} run offers {offers}, not {method}")
        return self.engine

    def translate(
        self,
        inputs: Sequence[str | bytes],
        *,
        beam: int | None = None,
        nbest: int | None = None,
        max_input_tokens: int = 1024,
        warnings: WarningLimiter | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[str] | list[list[str]]:
        """The translation of each input (translation and summarisation runs).

        ``beam`` and ``nbest`` default to the run's decode.beam_size and decode.nbest; with
        an n-best size over 1 each input gets a list of its n best outputs. Inputs are
        decoded as `s2s translate` decodes a file's lines: batched by length 2000 at a time,
        an empty (or blank) input gives an empty output, bytes that are not UTF-8 are
        replaced and inputs longer than ``max_input_tokens`` are cut, each with a warning
        on stderr (or to ``warnings``, a `WarningLimiter`).

        >>> model.translate(["A dog runs.", "A dog runs."], beam=1) == 2 * model.translate(
        ...     ["A dog runs."], beam=1
        ... )
        True
        >>> best = model.translate(["A dog runs."], beam=3, nbest=2)
        >>> len(best), len(best[0])
        (1, 2)

        ``sample=True`` draws instead of searching (``temperature``, ``top_k``, ``top_p``;
        ``seed`` makes it repeatable), ``nbest`` samples per input; ``prefixes`` gives each
        input a forced start of its output (target text; an empty one forces nothing).

        >>> drawn = model.translate(["A dog runs."], sample=True, nbest=3, seed=1)
        >>> drawn == model.translate(["A dog runs."], sample=True, nbest=3, seed=1)
        True
        """
        engine = self._engine_for("translate", inputs)
        _, size = engine.search_sizes(beam, nbest, sample)
        options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
        steer = steering(sample, size, options, prefixes)
        if prefixes is not None and len(prefixes) != len(inputs):
            raise S2SError(f"{len(prefixes)} prefixes for {len(inputs)} inputs")
        outputs = engine.translate(inputs, beam, nbest, max_input_tokens, warnings, steer)
        return outputs if size > 1 else [hyps[0] for hyps in outputs]

    def continuous_translation(
        self, *, beam: int | None = None, nbest: int | None = None, max_input_tokens: int = 1024
    ) -> ContinuousTranslation:
        """A beam search that requests join between its steps and leave as soon as their
        sources are done (continuous batching, as `s2s serve --continuous`): ``add(key, inputs)``
        starts a request, each ``step()`` returns the requests it completed, as (key, one
        n-best list of texts per input). Each input gets what `translate` gives it.

        >>> search = model.continuous_translation(beam=3)
        >>> search.add("first", ["A dog runs.", ""])
        >>> completed = []
        >>> while not completed:
        ...     completed = search.step()
        >>> key, outputs = completed[0]
        >>> key, [best for best, *_ in outputs] == model.translate(["A dog runs.", ""], beam=3)
        ('first', True)
        """
        engine = self._engine_for("translate")
        return engine.continuous(beam, nbest, max_input_tokens)

    def joins_running_search(self, beam: int | None = None) -> bool:
        """Whether `continuous_translation` takes this beam (None: decode.beam_size): beam
        search over 1 beam, without decode.no_repeat_ngram_size or decode.min_length."""
        return self._engine_for("translate").joins_running_search(beam)

    def input_tokens(self, method: str, inputs: Sequence[Any]) -> list[int]:
        """What each input of ``method`` costs in tokens (for batch budgets, `s2s serve`)."""
        return self._engine_for(method).input_tokens(inputs)

    def search_sizes(
        self, beam: int | None, nbest: int | None, sample: bool = False
    ) -> tuple[int, int]:
        """The beam and n-best sizes `translate` would use (the run's decode.beam_size and
        decode.nbest where None); an n-best list longer than the beam is an error (unless
        sampling: then n-best is the number of samples)."""
        return self._engine_for("translate").search_sizes(beam, nbest, sample)

    def translate_stream(
        self,
        source: BinaryIO,
        sink: BinaryIO,
        *,
        beam: int | None = None,
        nbest: int | None = None,
        chunk_lines: int = 2000,
        max_input_tokens: int = 1024,
        progress: TaskProgress | None = None,
        alignments: Path | None = None,
        steering: Steering | None = None,
    ) -> int:
        """`s2s translate`: each line of ``source`` translated into a line of ``sink`` (or
        ``nbest`` 'i ||| text' lines), chunk by chunk as input arrives; returns the count.
        ``steering`` (`steering`) samples or forces prefixes."""
        engine = self._engine_for("translate")
        return engine.translate_stream(
            source, sink, beam, nbest, chunk_lines, max_input_tokens, progress, alignments,
            steering,
        )  # fmt: skip

    def transcribe(self, audio: Sequence[str | Path], *, beam: int | None = None) -> list[str]:
        """The transcript of each audio (.wav, .flac) or feature file (speech runs); an
        empty path gives an empty transcript, a missing file is an error naming it."""
        return self._engine_for("transcribe", audio).transcribe(audio, beam)

    def transcribe_stream(self, paths: Iterable[str], out: TextIO, beam: int | None = None) -> int:
        """`s2s transcribe`: one transcript line per path into ``out``, chunk by chunk."""
        return self._engine_for("transcribe").transcribe_stream(paths, out, beam)

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        max_tokens: int = 50,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        beam: int = 0,
    ) -> str | list[str]:
        """Each prompt followed by a sampled continuation (language-model runs): one line,
        ending at the model's end of sentence or after ``max_tokens`` tokens. A str gives a
        str, a list a list. ``temperature`` 0 is greedy; ``seed`` makes it repeatable;
        ``beam`` k > 0 beam-searches the likeliest continuation instead of sampling (with
        the run's ``decode.length_penalty``)."""
        from s2s.tasks.language_model.sampling import SamplingOptions

        engine = self._engine_for("generate")
        alpha = self.config.decode.length_penalty
        options = SamplingOptions(max_tokens, temperature, top_k, top_p, seed, beam, alpha)
        if isinstance(prompts, str):
            return engine.generate([prompts], options)[0]
        return engine.generate(prompts, options)

    def score(self, lines: Sequence[str]) -> list[Perplexity]:
        """How likely each line is under a language model: ``log_prob`` (natural log, of its
        tokens and end of line), ``tokens``, ``words`` and the word-level ``word_ppl``."""
        return self._engine_for("score", lines).score(lines)
