"""Step checkpoints: which ones training keeps, and averaging the weights of the last N.

Training saves validated weights as ``checkpoints/step-N.pt``. It keeps the
``train.keep_best`` best of them and, with ``train.keep_last``, also the most recent ones.
Averaging the weights of the last few checkpoints of a run usually scores a little better
than any one of them, at no training cost.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from s2s.errors import S2SError
from s2s.run.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from s2s.run.directory import RunDir

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"step-(\d+)\.pt")


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N.pt`` in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = STEP_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_step_checkpoints(folder: Path, keep_files: Iterable[str], keep_last: int) -> None:
    """Delete the step checkpoints that are neither in ``keep_files`` (the best) nor among
    the ``keep_last`` most recent."""
    found = step_checkpoints(folder)
    recent = {path.name for _, path in found[-keep_last:]} if keep_last else set()
    keep = set(keep_files) | recent
    for _, path in found:
        if path.name not in keep:
            path.unlink(missing_ok=True)


def average_state_dicts(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of floating-point tensors (summed in float64, returned in each
    tensor's own dtype); other tensors are taken from the last state."""
    if not states:
        raise S2SError("no checkpoints to average")
    names = list(states[-1])
    for state in states:
        if set(state) != set(names):
            raise S2SError("the checkpoints hold different tensors (another model?)")
    averaged = {}
    for name in names:
        last = states[-1][name]
        if any(state[name].shape != last.shape for state in states):
            raise S2SError(f"{name}: the checkpoints disagree on its shape")
        if not last.is_floating_point():
            averaged[name] = last.clone()
            continue
        total = torch.zeros(last.shape, dtype=torch.float64)
        for state in states:
            total += state[name].double()
        averaged[name] = (total / len(states)).to(last.dtype)
    return averaged


def select_last(folder: Path, last: int) -> list[Path]:
    """The ``last`` most recent step checkpoints, oldest first."""
    found = step_checkpoints(folder)
    if last < 1:
        raise S2SError("--last must be at least 1")
    if len(found) < last:
        have = ", ".join(path.name for _, path in found) or "none"
        raise S2SError(
            f"{folder}: asked to average {last} checkpoints but only {len(found)} step "
            f"checkpoints are kept ({have}); train with train.keep_last = {last} to keep them"
        )
    return [path for _, path in found[-last:]]


def average_checkpoints(inputs: list[Path], out: Path) -> Path:
    """Write the averaged weights of ``inputs`` to ``out``, with the newest one's config and
    progress, so `s2s translate --checkpoint` and `s2s evaluate --checkpoint` can use it."""
    if out.resolve() in {path.resolve() for path in inputs}:
        raise S2SError(f"{out}: would overwrite one of the checkpoints being averaged")
    payloads = [load_checkpoint(path) for path in inputs]
    states = []
    for path, payload in zip(inputs, payloads, strict=True):
        if not isinstance(payload.get("model"), dict):
            raise S2SError(f"{path}: checkpoint holds no model weights")
        states.append(payload["model"])
    newest = payloads[-1]
    averaged = {"model": average_state_dicts(states)}
    averaged |= {key: newest[key] for key in ("config", "progress") if key in newest}
    averaged["averaged_from"] = [path.name for path in inputs]
    save_checkpoint(out, averaged)
    log.debug("wrote %s from %s", out, ", ".join(path.name for path in inputs))
    return out


@dataclass
class AverageReport:
    task: str  # task.type of the run, which says what the averaged checkpoint serves
    inputs: list[Path]
    output: Path
    before: dict[str, float] | None  # validation scores of the newest input
    after: dict[str, float] | None  # validation scores of the average


def average_last(
    run_path: Path, last: int, out: Path | None, validate: bool, device: str
) -> AverageReport:
    """Average the run's ``last`` most recent step checkpoints; with ``validate``, score the
    newest of them and the average on the validation split."""
    from s2s.config import read_saved_config
    from s2s.run.directory import RunDir
    from s2s.run.lock import lock_run_directory

    run = RunDir(run_path).require()
    lock_run_directory(run.path, "s2s average")  # writes the average, maybe the data cache
    task = read_saved_config(run.config_file).task.type
    inputs = select_last(run.checkpoints, last)
    output = out or run.checkpoints / f"averaged-last-{last}.pt"
    average_checkpoints(inputs, output)
    if not validate:
        return AverageReport(task, inputs, output, None, None)
    before = score_checkpoint(run_path, inputs[-1], device)
    after = score_checkpoint(run_path, output, device)
    return AverageReport(task, inputs, output, before, after)


def score_checkpoint(run_path: Path, checkpoint: Path, device: str) -> dict[str, float]:
    """Validation scores of one checkpoint, computed as training computes them."""
    from s2s.config import read_saved_config
    from s2s.data.corpus import tokenize_split
    from s2s.kernels.precision import autocast_factory, resolve_amp
    from s2s.run.directory import RunDir, load_run
    from s2s.tasks.translation.translator import Translator
    from s2s.train.validation import validation_scores

    run = RunDir(run_path).require()
    config = read_saved_config(run.config_file)
    task = config.task.type
    if task == "speech":
        return score_speech_checkpoint(run, checkpoint, device)
    if task == "language_model":
        return score_language_model_checkpoint(run, checkpoint, device)
    if task not in ("translation", "summarization"):
        raise S2SError(
            f"{run_path}: s2s average validates text-to-text, language-model and speech "
            f"runs only (task.type = {task!r}); use --no-validate, then s2s evaluate --checkpoint"
        )
    # fp32 weights: the validation loss runs under train.amp, as in training
    config, tokenizers, model, torch_device = load_run(
        run_path, checkpoint, device, cast_weights=False
    )
    data = tokenize_split(config.data["valid"], "valid", tokenizers, run.cache)
    autocast = autocast_factory(resolve_amp(config.train.amp, torch_device), torch_device)
    translator = Translator(model, tokenizers, config.decode, torch_device)
    with_bleu = config.train.valid_decode and task == "translation"
    scores = validation_scores(translator, data, config.train.max_tokens, with_bleu, autocast)
    if config.train.valid_decode and task == "summarization":
        from s2s.tasks.summarization.trainer import rouge_log_scores

        with autocast():
            hypotheses = translator.search_ids(data.src, beam_size=1)
        text = [tokenizers.tgt.decode(h[0].tokens if h else []) for h in hypotheses]
        scores |= rouge_log_scores(text, data.raw.all_references())
    return scores


def score_language_model_checkpoint(run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
    """Validation loss and perplexities of a language-model checkpoint, as its training
    scores them: the valid text read as ``train.streams`` rows, under train.amp."""
    from s2s.kernels.precision import autocast_factory, resolve_amp
    from s2s.tasks.language_model.data import load_stream
    from s2s.tasks.language_model.model import load_language_model
    from s2s.tasks.language_model.scoring import stream_perplexity
    from s2s.train.validation import loss_scores

    config, tokenizer, model, torch_device = load_language_model(run.path, checkpoint, device)
    stream = load_stream(config, "valid", tokenizer)
    autocast = autocast_factory(resolve_amp(config.train.amp, torch_device), torch_device)
    result = stream_perplexity(model, stream, config.train.streams, torch_device, autocast)
    scores = loss_scores(result.nll / max(result.tokens, 1))
    if config.tokenizer.model_type != "word":
        scores["valid_word_ppl"] = round(result.word_ppl, 3)
    return scores


def score_speech_checkpoint(run: RunDir, checkpoint: Path, device: str) -> dict[str, float]:
    """Greedy valid WER and CER of a speech checkpoint, decoded as validation decodes."""
    from s2s.tasks.speech.data import split_features
    from s2s.tasks.speech.transcriber import load_speech_run, validation_scores

    config, recognizer = load_speech_run(run.path, checkpoint, device, cast_weights=False)
    manifest, features = split_features(config.data["valid"], "valid", config.audio, run.cache)
    return validation_scores(recognizer, features, manifest.transcripts)
