"""Text-to-text runs (translation, summarisation): `s2s evaluate` translates a split or a
file pair and scores it by the task's metric; `s2s average` scores a checkpoint as
validation does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from s2s.config import Config, SplitConfig
from s2s.data.corpus import ParallelText, load_parallel, tokenize_split
from s2s.errors import S2SError
from s2s.kernels.precision import autocast_factory, decoding_precision, resolve_amp
from s2s.progress import TaskProgress
from s2s.run.directory import RunDir
from s2s.run.evaluations import record_evaluation
from s2s.scores import Score
from s2s.tasks.combination import Combination, combined_decoder
from s2s.tasks.loading import load_run
from s2s.tasks.task import EvaluationRequest
from s2s.tasks.translation.translator import Translator
from s2s.train.validation import corpus_loss, greedy_scores, loss_scores

if TYPE_CHECKING:
    from s2s.tasks.translation.task import TranslationTask


def evaluate_text_run(
    task: TranslationTask, run_dir: Path, request: EvaluationRequest
) -> list[Score]:
    """Scores of decoding a split (or src/ref files) with the run's model, by the task's
    `corpus_scores`; the request's ``amp`` and ``decode_overrides`` (``--set
    decode.key=value``) change the saved [decode] settings."""
    overrides = request.decode_overrides
    config, tokenizers, model, torch_device = load_run(
        run_dir, request.checkpoint, request.device, request.amp, decode_overrides=overrides
    )
    text = evaluation_text(run_dir, config, request)
    combination = Combination(tuple(request.ensemble), request.lm, request.lm_weight)
    decoder = combined_decoder(
        run_dir, model, tokenizers, combination, torch_device, request.amp, overrides
    )
    translator = Translator(model, tokenizers, config.decode, torch_device, decoder)
    beam = request.beam or config.decode.beam_size
    label = request.split if request.src is None else str(request.src)
    with TaskProgress(f"translating {label}", total=len(text.src)) as progress:
        outputs = translator.translate(text.src, beam, on_batch=progress.update)
        progress.advance_to(len(text.src))  # empty lines are not searched
    hypotheses = [h[0] for h in outputs]
    if request.output is not None:
        request.output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    scores = task.corpus_scores(hypotheses, text)
    used = request.checkpoint or RunDir(run_dir).default_checkpoint()
    precision = decoding_precision(config.decode.amp, torch_device)
    if not combination.active():  # an ensemble's or a fusion's score is not the run's own
        record_evaluation(run_dir, label, used, beam, scores, overrides, precision)
    return scores


def evaluation_text(run_dir: Path, config: Config, request: EvaluationRequest) -> ParallelText:
    """The pairs to evaluate on: the --src/--ref files, or a split of the recipe."""
    src, ref, split = request.src, request.ref, request.split
    if (src is None) != (ref is None):
        raise S2SError("--src and --ref go together")
    if src is not None and ref is not None:
        refs = ref if isinstance(ref, list) else [ref]
        for path in (src, *refs):
            if not path.is_file():
                raise S2SError(f"{path}: file not found")
        return load_parallel(SplitConfig(src=src, tgt=refs), "evaluate")
    if split not in config.data:
        known = ", ".join(sorted(config.data))
        raise S2SError(f"{run_dir}: the recipe has no split {split!r} (splits: {known})")
    return load_parallel(config.data[split], split)


def score_text_checkpoint(
    task: TranslationTask, run: RunDir, checkpoint: Path, device: str
) -> dict[str, float]:
    """Validation loss and perplexity of one checkpoint and, when the recipe decodes at
    validation, the task's greedy scores: computed as training computes them (fp32
    weights, under train.amp)."""
    config, tokenizers, model, torch_device = load_run(
        run.path, checkpoint, device, cast_weights=False
    )
    data = tokenize_split(config.data["valid"], "valid", tokenizers, run.cache)
    autocast = autocast_factory(resolve_amp(config.train.amp, torch_device), torch_device)
    loss, _ = corpus_loss(model, data, config.train.max_tokens, torch_device, autocast)
    scores = loss_scores(loss)
    if config.train.valid_decode:
        translator = Translator(model, tokenizers, config.decode, torch_device)
        metric = config.train.early_stopping_metric
        score = lambda h: task.decoded_scores(h, data.raw, metric)  # noqa: E731
        scores |= greedy_scores(translator, data.src, score, autocast)
    return scores
