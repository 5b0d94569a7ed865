"""A run's model card: what was trained, on what, for how long, how well, and by which
versions of s2s and torch.

Training records what only it knows (data sizes, versions) in ``about.json``; `s2s
evaluate` appends its scores to ``evaluations.jsonl``; the rest is read from the config,
the tokenisers, the checkpoints and the metrics log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2s.errors import S2SError
from s2s.run.about import read_about
from s2s.run.cell_record import check_recorded_cell, recorded_cell
from s2s.run.directory import RunDir
from s2s.run.evaluations import latest_evaluations
from s2s.run.metrics_log import read_metrics, task_metric

# the [model] keys a card shows
MODEL_KEYS = (
    "cell",
    "cell_options",
    "encoder_cell",
    "encoder_cell_options",
    "decoder_cell",
    "decoder_cell_options",
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
    from s2s.tasks.registry import find_task

    run = RunDir(run_path).require()
    config = read_saved_config(run.config_file)
    check_recorded_cell(run, config)
    task = find_task(config.task.type)
    tokenizers = task.load_tokenizers(run.path, config)
    model = task.build_model(config, tokenizers)
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
        "vocabulary": None
        if tokenizers is None
        else {
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
        "cell": recorded_cell(about),
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
    if "windows" in train:  # time series cut into forecast windows
        return (
            f"train {train['values']:,} values of {train['series']:,} series "
            f"({train['windows']:,} windows), valid {valid['windows']:,} forecast windows"
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
    rows = [
        ("run", card["run"]),
        ("task", task_type.task_line(task)),
        ("cell", _cell_line(model, card.get("cell"))),
        ("layers", task_type.layers_line(model)),
        ("parameters", f"{model['parameters']:,} ({model['parameters'] * 4 / 2**20:.1f} MiB fp32)"),
        ("vocabulary", _vocabulary_line(vocab)),
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


def _vocabulary_line(vocab: dict[str, Any] | None) -> str:
    if vocab is None:
        return "none (numbers in, numbers out)"
    sizes = (
        f"joint {vocab['src']:,}"
        if vocab["joint"]
        else f"source {vocab['src']:,}, target {vocab['tgt']:,}"
    )
    return f"{vocab['type']}, {sizes}"


def _cell_line(model: dict[str, Any], recorded: dict[str, Any] | None) -> str:
    """'lstm (forget_bias=1.0, proj_size=0) from s2s 0.1.0': the recorded options (defaults
    included) and provider; runs from before the record show the config's options."""
    options = recorded["options"] if recorded else model["cell_options"]
    text = ", ".join(f"{k}={v}" for k, v in options.items())
    line = model["cell"] + (f" ({text})" if text else "")
    if recorded:
        line += f" from {recorded['distribution']} {recorded['version']}"
    return line


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
