"""A run's model card: what was trained, on what, for how long, how well, and by which
versions of s2s and torch.

Training records what only it knows (data sizes, versions) in ``about.json``; `s2s
evaluate` appends its scores to ``evaluations.jsonl``; the rest is read from the config,
the tokenisers, the checkpoints and the metrics log.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from s2s.atomic import append_line, atomic_write_bytes
from s2s.data.corpus import TokenizedSplit
from s2s.errors import S2SError
from s2s.run.directory import RunDir
from s2s.run.metrics_log import read_metrics, task_metric
from s2s.scores import Score

log = logging.getLogger(__name__)

# the [model] keys a card shows
MODEL_KEYS = (
    "cell",
    "cell_options",
    "embed_size",
    "hidden_size",
    "encoder_layers",
    "decoder_layers",
    "bidirectional",
    "attention",
    "input_feeding",
    "dropout",
    "residual",
    "tie_embeddings",
    "copy",
    "max_source_length",
    "init",
    "init_range",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import torch

    from s2s import __version__
    from s2s.kernels.allocator import allocator_in_use
    from s2s.kernels.denormals import denormals_flushed

    return {
        "s2s": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "malloc": allocator_in_use(),
        "denormals": "flushed" if denormals_flushed() else "kept",
    }


def split_size(data: TokenizedSplit) -> dict[str, int]:
    return {
        "pairs": len(data.src),
        "src_tokens": sum(map(len, data.src)),
        "tgt_tokens": sum(map(len, data.tgt)),
    }


def record_session(
    run: RunDir, step: int, train: TokenizedSplit, valid: TokenizedSplit, used_pairs: int
) -> None:
    """Note in ``about.json`` that a training session starts at ``step`` (with which
    versions) and how large its data is; resumed runs list one session each."""
    data = {"train": {**split_size(train), "used_pairs": used_pairs}, "valid": split_size(valid)}
    record_session_data(run, step, data)


def record_session_data(run: RunDir, step: int, data: dict[str, Any]) -> None:
    """`record_session` for any task: ``data`` is what the card shows about its splits."""
    about = read_about(run)
    sessions = [s for s in about.get("sessions", []) if s.get("from_step", 0) < step]
    sessions.append({"from_step": step, "started": _now(), **versions()})
    about = {"sessions": sessions, "data": data}
    atomic_write_bytes(run.path / "about.json", json.dumps(about, indent=1).encode())


def read_about(run: RunDir) -> dict[str, Any]:
    path = run.path / "about.json"
    if not path.is_file():
        return {}
    try:
        about = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return about if isinstance(about, dict) else {}


def record_evaluation(
    run_path: Path,
    split: str,
    checkpoint: Path,
    beam: int | None,
    scores: list[Score],
    decode_overrides: Sequence[str] = (),
    precision: str | None = None,
) -> None:
    """Append one `s2s evaluate` result to ``evaluations.jsonl`` (for the model card),
    with the ``--set decode.key=value`` it was decoded under, if any, and the precision it
    decoded in (`s2s.kernels.precision.decoding_precision`), which can move scores a little."""
    record = {
        "split": split,
        "checkpoint": checkpoint.name,
        "beam": beam,
        **({"precision": precision} if precision else {}),
        **({"set": list(decode_overrides)} if decode_overrides else {}),
        "scores": {score.name: round(score.score, 2) for score in scores},
        "signatures": {score.name: score.signature for score in scores},
        "time": _now(),
    }
    path = RunDir(run_path).evaluations_log
    try:
        append_line(path, json.dumps(record))
    except S2SError as error:  # a read-only run directory still gets its scores printed
        log.warning("cannot record the scores: %s", error)


def latest_evaluations(run: RunDir) -> dict[str, dict[str, Any]]:
    """The most recent evaluation of each split."""
    path = run.evaluations_log
    latest: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "split" in record:
                latest[record["split"]] = {k: v for k, v in record.items() if k != "split"}
    return latest


def _training_state(run: RunDir) -> dict[str, Any]:
    """Steps, epochs and time from ``last.pt`` (what a resume would continue from)."""
    from s2s.run.checkpoint import load_checkpoint

    if not run.last_checkpoint.is_file():
        return {"steps": 0, "epochs_completed": 0, "batches_into_epoch": 0, "minutes": 0.0}
    progress = json.loads(load_checkpoint(run.last_checkpoint).get("progress", "{}"))
    return {
        "steps": progress.get("step", 0),
        "epochs_completed": progress.get("epoch", 0),
        "batches_into_epoch": progress.get("batch_in_epoch", 0),
        "minutes": round(progress.get("elapsed", 0.0) / 60, 2),
    }


def _best(run: RunDir, records: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    best = run.read_best()
    if not best:
        return None
    entry = best[0]
    card = {"checkpoint": entry["file"], "step": entry["step"], "metric": metric}
    card["value"] = entry["metric"]
    for record in records:
        if record["step"] == entry["step"]:
            card |= {k: v for k, v in record.items() if k.startswith("valid_")}
    return card


def build_card(run_path: Path) -> dict[str, Any]:
    """Everything `s2s info` shows, as JSON-ready values."""
    from s2s.config import read_saved_config
    from s2s.data.tokenizer import load_tokenizers
    from s2s.tasks.registry import find_task

    run = RunDir(run_path).require()
    config = read_saved_config(run.config_file)
    tokenizers = load_tokenizers(run.path, config.tokenizer.joint)
    model = find_task(config.task.type).build_model(config, tokenizers)
    parameters = sum(p.numel() for p in model.parameters())
    records = read_metrics(run.metrics_log) if run.metrics_log.is_file() else []
    name = config.train.early_stopping_metric
    metric = "valid_loss" if name == "loss" else f"valid_{name}"
    about = read_about(run)
    sessions = about.get("sessions", [])
    return {
        "run": str(run.path),
        "task": config.task.model_dump(mode="json"),
        "model": {
            **config.model.model_dump(mode="json", include=set(MODEL_KEYS)),
            "parameters": parameters,
        },
        "vocabulary": {
            "type": config.tokenizer.model_type,
            "joint": tokenizers.joint,
            "src": tokenizers.src.vocab_size,
            "tgt": tokenizers.tgt.vocab_size,
        },
        "data": about.get("data"),
        "training": {**_training_state(run), "validations": len(records)},
        "task_metric": task_metric(records),
        "best": _best(run, records, metric),
        "test": latest_evaluations(run),
        "written_by": sessions[-1] if sessions else None,
    }


def _data_line(data: dict[str, Any] | None) -> str:
    if not data:
        return "unknown (recorded by s2s train from this version on)"
    train, valid = data["train"], data["valid"]
    if "frames" in train:  # speech: utterances of feature frames
        return (
            f"train {train['utterances']:,} utterances ({train['used_utterances']:,} within "
            f"train.max_length; {train['frames']:,} frames / {train['tgt_tokens']:,} target "
            f"tokens), valid {valid['utterances']:,} utterances"
        )
    if "words" in train:  # a language model's token streams
        return (
            f"train {train['tokens']:,} tokens ({train['words']:,} words, {train['lines']:,} "
            f"lines), valid {valid['tokens']:,} tokens ({valid['words']:,} words)"
        )
    return (
        f"train {train['pairs']:,} pairs ({train['used_pairs']:,} within train.max_length; "
        f"{train['src_tokens']:,} source / {train['tgt_tokens']:,} target subwords), "
        f"valid {valid['pairs']:,} pairs"
    )


def format_card(card: dict[str, Any]) -> str:
    """The card as aligned 'field  value' lines for people."""
    from s2s.tasks.registry import find_task  # tasks sit above inspect/: asked, not imported

    task, model, vocab, training = card["task"], card["model"], card["vocabulary"], card["training"]
    task_type = find_task(task["type"])
    options = ", ".join(f"{k}={v}" for k, v in model["cell_options"].items())
    rows = [
        ("run", card["run"]),
        ("task", task_type.task_line(task)),
        ("cell", model["cell"] + (f" ({options})" if options else "")),
        ("layers", task_type.layers_line(model)),
        ("parameters", f"{model['parameters']:,} ({model['parameters'] * 4 / 2**20:.1f} MiB fp32)"),
        (
            "vocabulary",
            f"{vocab['type']}, "
            + (
                f"joint {vocab['src']:,}"
                if vocab["joint"]
                else f"source {vocab['src']:,}, target {vocab['tgt']:,}"
            ),
        ),
        ("data", _data_line(card["data"])),
        (
            "trained",
            f"{training['steps']:,} steps, {training['epochs_completed']} full epochs "
            f"(+{training['batches_into_epoch']} batches), {training['minutes']} min, "
            f"{training['validations']} validations",
        ),
        ("best valid", _best_line(card["best"])),
    ]
    for split, result in sorted(card["test"].items()):
        scores = ", ".join(f"{name} {value}" for name, value in result["scores"].items())
        beam = f"beam {result['beam']}, " if result.get("beam") is not None else ""
        if result.get("precision", "fp32") != "fp32":
            beam += f"{result['precision']}, "
        beam += "".join(f"{setting}, " for setting in result.get("set", []))
        rows.append((f"eval {split}", f"{scores} ({beam}{result['checkpoint']})"))
    if not card["test"]:
        rows.append(("eval", "no scores yet (s2s evaluate RUN records them)"))
    who = card["written_by"]
    written_by = "unknown"
    if who:
        written_by = f"s2s {who['s2s']}, torch {who['torch']}, Python {who['python']}"
        if "malloc" in who:  # recorded since s2s.kernels.allocator; speed depends on it
            written_by += f", malloc {who['malloc']}"
        if "denormals" in who:  # recorded since s2s.kernels.denormals; fp32 speed depends on it
            written_by += f", denormals {who['denormals']}"
    rows.append(("written by", written_by))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def seq2seq_layers_line(model: dict[str, Any]) -> str:
    """The layers line of an encoder-decoder's card (`Task.layers_line`'s default)."""
    return (
        f"embed {model['embed_size']}, hidden {model['hidden_size']}, encoder "
        f"{model['encoder_layers']}{' bidirectional' if model['bidirectional'] else ''}, "
        f"decoder {model['decoder_layers']}, {model['attention']} attention"
        f"{', input feeding' if model['input_feeding'] else ''}"
        f"{', copy' if model.get('copy') else ''}"
        f"{f', sources cut to {limit} tokens' if (limit := model.get('max_source_length')) else ''}"
        f"{_init_note(model)}"
    )


def _init_note(model: dict[str, Any]) -> str:
    """How the model started; it decides how far a given number of steps gets (runs from
    before model.init existed read as "pytorch", how they were built)."""
    if model.get("init") == "uniform":
        return f", init uniform ±{model['init_range']:g}"
    return ", init PyTorch defaults"


def _best_line(best: dict[str, Any] | None) -> str:
    if best is None:
        return "none yet"
    scores = ", ".join(
        f"{key.removeprefix('valid_')} {value}"
        for key, value in best.items()
        if key.startswith("valid_")
    )
    return f"{best['checkpoint']} (step {best['step']}): {scores or best['value']}"


def model_card(run_path: Path) -> dict[str, Any]:
    """`build_card`, with damaged records reported in one line."""
    try:
        return build_card(run_path)
    except (KeyError, TypeError, ValueError) as error:
        raise S2SError(f"{run_path}: cannot read the run's records: {error}") from None
