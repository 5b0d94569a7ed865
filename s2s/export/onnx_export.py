"""Writing a trained run as ONNX graphs (`s2s export RUN --format onnx --out DIR`).

Graphs are traced by torch.onnx's TorchScript exporter (``dynamo=False``): the torch.export
based exporter specialises the source length of a fused `nn.LSTM` to the traced one
(torch 2.13 and 2.14), so an encoder could not take sentences of other lengths. Tracing records the
path the model took for the example inputs, so every graph is checked against the model on
a probe batch of another size and length: a cell whose step does not trace (Python control
flow on values, numpy) is refused naming the cell, and an encoder whose cells loop over time
in Python (so the trace fixes the length) is exported once per length bucket instead. A
speech run's encoder reads features (s2s.export.speech); its step graph is the text one.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from s2s.atomic import atomic_write_bytes
from s2s.config import DecodeConfig, read_saved_config
from s2s.core.decoding import select_rows
from s2s.core.seq2seq import Seq2Seq
from s2s.data.tokenizer import EOS_ID, PAD_ID, TokenizerPair, tokenizer_files
from s2s.errors import S2SError
from s2s.export.graphs import (
    ENCODER_INPUTS,
    SENTENCE_TENSORS,
    STEP_SENTENCE_INPUTS,
    EncoderGraph,
    StepGraph,
    flatten_states,
    state_names,
)
from s2s.export.language_model import export_language_model
from s2s.export.quantize import quantize_graph
from s2s.export.speech import example_features, export_speech_encoder
from s2s.export.symbolics import register_symbolics
from s2s.export.tracing import graph_matches, trace_onnx
from s2s.exported.files import (
    CONFIG_FILE,
    ENCODER_DECODER,
    ENCODER_FILE,
    STEP_FILE,
    ExportConfig,
    bucket_file,
)
from s2s.run.directory import RunDir
from s2s.tasks.language_model.kind import LanguageModelKind
from s2s.tasks.loading import load_run
from s2s.tasks.registry import find_task
from s2s.tasks.speech.audio import input_width

TRACE_LENGTHS = (5, 3)  # the example batch the graphs are traced on
PROBE_LENGTHS = (9, 6, 2)  # another batch size and length, to check the traces
TRACE_BEAMS, PROBE_BEAMS = 2, 3  # hypotheses per sentence in the step's example and probe
ENCODER_BUCKETS = (16, 32, 64, 128, 256)  # source lengths of per-length encoder graphs
ExampleBatch = Callable[[tuple[int, ...]], tuple[Tensor, Tensor]]  # lengths -> (src, lengths)


@dataclass
class ExportedRun:
    """What `export_run` wrote."""

    out: Path
    files: list[str]
    buckets: list[int]


def export_run(
    run_dir: Path, out: Path, checkpoint: Path | None = None, quantize: str | None = None
) -> ExportedRun:
    """Export a run's graphs, tokenisers and config to ``out`` (created; files already there
    are replaced): the encoder and decoder-step graphs of a translation, summarisation or
    speech run (its audio settings in the config), the step graph of a language model. With
    ``quantize`` "int8" the graphs' weights are quantised (s2s.export.quantize)."""
    task = find_task(read_saved_config(RunDir(run_dir).require().config_file).task.type)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)  # until the new graphs are all written
    register_symbolics()
    if isinstance(task, LanguageModelKind):
        export_config = export_language_model(run_dir, out, checkpoint)
    elif task.transcribes:
        export_config = export_speech(run_dir, out, checkpoint)
    elif task.refusal:
        raise S2SError(
            f"{run_dir}: a {task.name} run; s2s export writes translation, summarisation, "
            "language-model and speech runs so far"
        )
    else:
        export_config = export_seq2seq(run_dir, out, checkpoint)
    buckets = export_config.encoder_buckets
    graphs = [bucket_file(n) for n in buckets] if buckets else [ENCODER_FILE]
    graphs = [*graphs, STEP_FILE] if export_config.graphs == ENCODER_DECODER else [STEP_FILE]
    if quantize:
        for name in graphs:
            quantize_graph(out / name)
        export_config.precision = quantize
    write_config(out, export_config)
    tokenizers = sorted({export_config.src_tokenizer, export_config.tgt_tokenizer})
    return ExportedRun(out, [*graphs, *tokenizers, CONFIG_FILE], buckets)


def export_seq2seq(run_dir: Path, out: Path, checkpoint: Path | None) -> ExportConfig:
    """The encoder and decoder-step graphs of a text-to-text run, and its tokenisers."""
    config, tokenizers, model, _ = load_run(run_dir, checkpoint, "cpu", "off")
    refuse_constraints(run_dir, config.decode)
    cells = {side: config.model.side_cell(side)[0] for side in ("encoder", "decoder")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and the exporter's deprecation notes
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            buckets = export_encoder(model, out, cells["encoder"], config.model.max_source_length)
            state_count = export_step(model, out, cells["decoder"])
    files = copy_tokenizers(run_dir, tokenizers, out)
    return ExportConfig(
        task=config.task.type,
        src_tokenizer=files[0],
        tgt_tokenizer=files[1],
        decode=config.decode,
        state_count=state_count,
        encoder_buckets=buckets,
        max_source_length=config.model.max_source_length,
        precision="fp32",
        cells=cells,
    )


def refuse_constraints(run_dir: Path, decode: DecodeConfig) -> None:
    """Output constraints the numpy search does not apply yet are refused in one line."""
    constrained = [k for k in ("min_length", "no_repeat_ngram_size") if getattr(decode, k)]
    if constrained:
        keys = ", ".join(f"decode.{key}" for key in constrained)
        raise S2SError(f"{run_dir}: exported models do not apply {keys} yet; set it to 0")


def export_speech(run_dir: Path, out: Path, checkpoint: Path | None) -> ExportConfig:
    """The encoder graph (features in; CTC log-probabilities out too when the run has a CTC
    head) and the decoder-step graph of a speech run, its tokeniser and audio settings."""
    from s2s.tasks.speech.transcriber import load_speech_run

    config, recognizer = load_speech_run(run_dir, checkpoint, "cpu", "off")
    refuse_constraints(run_dir, config.decode)
    model, width = recognizer.model, input_width(config.audio)
    cells = {side: config.model.side_cell(side)[0] for side in ("encoder", "decoder")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and the exporter's deprecation notes
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            limit = config.train.max_length
            buckets = export_speech_encoder(model, width, out, cells["encoder"], limit)
            frames = functools.partial(example_features, width)
            state_count = export_step(model, out, cells["decoder"], frames)
    name = recognizer.tokenizer.model_file.name
    atomic_write_bytes(out / name, recognizer.tokenizer.model_file.read_bytes())
    return ExportConfig(
        task=config.task.type,
        src_tokenizer=name,
        tgt_tokenizer=name,
        decode=config.decode,
        state_count=state_count,
        encoder_buckets=buckets,
        max_source_length=0,
        precision="fp32",
        cells=cells,
        audio=config.audio,
        ctc=model.ctc_head is not None,
    )


def write_config(out: Path, export_config: ExportConfig) -> None:
    text = json.dumps(export_config.to_json(), indent=2) + "\n"
    atomic_write_bytes(out / CONFIG_FILE, text.encode("utf-8"))


def copy_tokenizers(run_dir: Path, tokenizers: TokenizerPair, out: Path) -> tuple[str, str]:
    """The run's sentencepiece model(s) beside the graphs; returns the source and target names."""
    src, tgt = tokenizer_files(run_dir, tokenizers.joint)
    for path in {src, tgt}:
        atomic_write_bytes(out / path.name, path.read_bytes())
    return src.name, tgt.name


def example_batch(model: Seq2Seq, lengths: tuple[int, ...], length: int = 0) -> tuple[Tensor, ...]:
    """Padded source ids [B, S] (S = ``length`` or the longest) ending in EOS, and lengths."""
    generator = torch.Generator().manual_seed(len(lengths))
    vocab = model.src_embed.num_embeddings
    src = torch.full((len(lengths), max(length, *lengths)), PAD_ID, dtype=torch.long)
    for row, n in enumerate(lengths):
        src[row, : n - 1] = torch.randint(EOS_ID + 1, vocab, (n - 1,), generator=generator)
        src[row, n - 1] = EOS_ID
    return src, torch.tensor(lengths)


def export_encoder(model: Seq2Seq, out: Path, cell: str, max_source_length: int) -> list[int]:
    """The encoder graph for any source length; or, where the trace fixed the length (a cell
    that loops in Python), one graph per length bucket. Returns the buckets (none: one graph)."""
    graph = EncoderGraph(model).eval()
    state_count = len(graph(*example_batch(model, TRACE_LENGTHS))) - len(SENTENCE_TENSORS) - 1
    outputs = [*SENTENCE_TENSORS, "feed", *state_names(state_count)]
    axes = {"src": {0: "batch", 1: "source"}, "src_lengths": {0: "batch"}}
    axes |= {name: {0: "batch", 1: "source"} for name in SENTENCE_TENSORS}
    axes |= {name: {0: "batch"} for name in ["feed", *state_names(state_count)]}
    path = out / ENCODER_FILE
    trace_onnx(graph, example_batch(model, TRACE_LENGTHS), path, outputs, axes, cell)
    probe = example_batch(model, PROBE_LENGTHS)
    if graph_matches(path, graph(*probe), dict(zip(ENCODER_INPUTS, probe, strict=True))):
        return []
    path.unlink()
    limit = max_source_length or ENCODER_BUCKETS[-1]
    buckets = [n for n in ENCODER_BUCKETS if n < limit] + [limit]
    for index, length in enumerate(buckets):
        example = example_batch(model, TRACE_LENGTHS, length)
        trace_onnx(graph, example, out / bucket_file(length), outputs, axes, cell)
        if index == 0:
            check_bucket(graph, out / bucket_file(length), length, cell)
    return buckets


def check_bucket(graph: EncoderGraph, path: Path, length: int, cell: str) -> None:
    """A per-length encoder must still take any batch size (the probe's, padded)."""
    lengths = tuple(min(n, length) for n in PROBE_LENGTHS)
    probe = example_batch(graph.model, lengths, length)
    if not graph_matches(path, graph(*probe), dict(zip(ENCODER_INPUTS, probe, strict=True))):
        raise S2SError(
            f"cell {cell!r}: its step does not trace to ONNX (the traced encoder computes "
            "something else for another batch size), so the model cannot be exported"
        )


def export_step(
    model: Seq2Seq, out: Path, cell: str, make_batch: ExampleBatch | None = None
) -> int:
    """The decoder-step graph, checked on the probe; returns the number of state tensors.
    ``make_batch`` gives the encoder's example input for some lengths (token ids unless
    given: a speech model's encoder reads features)."""
    make_batch = make_batch or functools.partial(example_batch, model)
    graph = StepGraph(model, []).eval()
    example = step_inputs(model, graph, make_batch(TRACE_LENGTHS), TRACE_BEAMS)
    count = len(example) - 6
    names = ["prev_tokens", *STEP_SENTENCE_INPUTS, "feed", *state_names(count)]
    outputs = ["log_probs", "feed.out", *state_names(count, ".out")]
    axes = {name: {0: "batch", 1: "source"} for name in STEP_SENTENCE_INPUTS}
    axes |= {name: {0: "rows"} for name in ["prev_tokens", "feed", *state_names(count)]}
    axes |= {name: {0: "rows"} for name in outputs}
    path = out / STEP_FILE
    trace_onnx(graph, example, path, outputs, axes, cell, names)
    probe = step_inputs(model, graph, make_batch(PROBE_LENGTHS), PROBE_BEAMS)
    if not graph_matches(path, graph(*probe), dict(zip(names, probe, strict=True))):
        path.unlink()
        raise S2SError(
            f"cell {cell!r}: its step does not trace to ONNX (the traced graph computes "
            "something else for another batch), so the model cannot be exported"
        )
    return count


def step_inputs(
    model: Seq2Seq, graph: StepGraph, batch: tuple[Tensor, Tensor], beams: int
) -> tuple[Tensor, ...]:
    """The step graph's inputs after encoding an example ``batch`` (source, lengths):
    ``beams`` hypotheses per sentence; sets the graph's state layout."""
    encoded = model.encode(*batch)
    states, feed = model.initial_state(encoded)
    graph.layout = list(states)
    rows = torch.arange(batch[1].size(0)).repeat_interleave(beams)
    flat = select_rows(flatten_states(states), rows)
    feed = feed.index_select(0, rows)
    generator = torch.Generator().manual_seed(beams)
    prev = torch.randint(
        EOS_ID + 1, model.tgt_embed.num_embeddings, rows.shape, generator=generator
    )
    return (prev, encoded.memory, encoded.keys, encoded.src_mask, encoded.src_ids, feed, *flat)
