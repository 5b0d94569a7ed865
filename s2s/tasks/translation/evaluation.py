"""`s2s evaluate`: translate a split or a file pair and score it with sacrebleu (ROUGE for
summarization runs, taking the best of several references where a split has them); speech
and language-model runs are handed to their own evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from s2s.config import SplitConfig, read_saved_config
from s2s.data.corpus import load_parallel
from s2s.errors import S2SError
from s2s.inspect.model_card import record_evaluation
from s2s.kernels.precision import decoding_precision
from s2s.progress import TaskProgress
from s2s.run.directory import RunDir, load_run
from s2s.tasks.translation.metrics import Score, bleu_and_chrf
from s2s.tasks.translation.translator import Translator


def evaluate_run(
    run_dir: Path,
    split: str,
    src: Path | None,
    ref: Path | None,
    beam: int | None,
    output: Path | None,
    checkpoint: Path | None,
    device: str,
    amp: str | None = None,
    decode_overrides: Sequence[str] = (),
) -> list[Score]:
    """Scores of decoding a split (or src/ref files) with the run's model; ``amp`` and
    ``decode_overrides`` (``--set decode.key=value``) change the saved [decode] settings
    (a language model is scored, not decoded: it takes neither)."""
    task = read_saved_config(RunDir(run_dir).require().config_file).task.type
    if task == "speech":
        from s2s.tasks.speech.transcriber import evaluate_speech_run

        if src is not None or ref is not None:
            raise S2SError("a speech run is evaluated on a manifest split (--split), not --src")
        return evaluate_speech_run(
            run_dir, split, beam, output, checkpoint, device, amp, decode_overrides
        )
    if task == "language_model":
        from s2s.tasks.language_model.scoring import evaluate_language_model

        options = (src, ref, beam, output, amp)
        if any(option is not None for option in options) or decode_overrides:
            raise S2SError("a language model is evaluated on a split (--split) only")
        return evaluate_language_model(run_dir, split, checkpoint, device)
    config, tokenizers, model, torch_device = load_run(
        run_dir, checkpoint, device, amp, decode_overrides=decode_overrides
    )
    if (src is None) != (ref is None):
        raise S2SError("--src and --ref go together")
    if src is not None and ref is not None:
        for path in (src, ref):
            if not path.is_file():
                raise S2SError(f"{path}: file not found")
        text = load_parallel(SplitConfig(src=src, tgt=ref), "evaluate")
    else:
        if split not in config.data:
            known = ", ".join(sorted(config.data))
            raise S2SError(f"{run_dir}: the recipe has no split {split!r} (splits: {known})")
        text = load_parallel(config.data[split], split)
    translator = Translator(model, tokenizers, config.decode, torch_device)
    beam = beam or config.decode.beam_size
    label = split if src is None else str(src)
    with TaskProgress(f"translating {label}", total=len(text.src)) as progress:
        outputs = translator.translate(text.src, beam, on_batch=progress.update)
        progress.advance_to(len(text.src))  # empty lines are not searched
    hypotheses = [h[0] for h in outputs]
    if output is not None:
        output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    if config.task.type == "summarization":
        from s2s.tasks.summarization.rouge import rouge_scores

        scores = rouge_scores(hypotheses, text.all_references())
    else:
        scores = bleu_and_chrf(hypotheses, text.tgt)
    used = checkpoint or RunDir(run_dir).default_checkpoint()
    precision = decoding_precision(config.decode.amp, torch_device)
    record_evaluation(run_dir, label, used, beam, scores, decode_overrides, precision)
    return scores
