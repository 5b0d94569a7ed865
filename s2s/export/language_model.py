"""Exporting a language-model run: its step graph (s2s.export.graphs), its tokeniser and
the shapes of its zero start state, from which `s2s generate DIR` reads a prompt token by
token (so every cell exports, whether or not its whole-sequence pass loops in Python)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from s2s.atomic import atomic_write_bytes
from s2s.data.tokenizer import EOS_ID
from s2s.errors import S2SError
from s2s.export.graphs import LanguageModelStepGraph, flatten_states, state_names
from s2s.export.tracing import graph_matches, trace_onnx
from s2s.exported.files import DECODER_ONLY, STEP_FILE, ExportConfig
from s2s.tasks.language_model.loading import load_language_model

TRACE_ROWS, PROBE_ROWS = 4, 3


def step_example(graph: LanguageModelStepGraph, rows: int) -> tuple[torch.Tensor, ...]:
    """Random previous tokens and states for ``rows`` streams (sets the graph's layout)."""
    generator = torch.Generator().manual_seed(rows)
    states = graph.model.initial_states(rows, torch.device("cpu"))
    graph.layout = list(states)
    flat = [torch.randn(t.shape, generator=generator) for t in flatten_states(states)]
    vocab = graph.model.embed.num_embeddings
    prev = torch.randint(EOS_ID + 1, vocab, (rows,), generator=generator)
    return (prev, *flat)


def export_language_model(run_dir: Path, out: Path, checkpoint: Path | None) -> ExportConfig:
    """Write the step graph and tokeniser of a language-model run; returns its config."""
    config, tokenizer, model, _ = load_language_model(run_dir, checkpoint, "cpu")
    cell = config.model.side_cell("decoder")[0]
    graph = LanguageModelStepGraph(model, []).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's and the exporter's deprecation notes
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            example = step_example(graph, TRACE_ROWS)
            count = len(example) - 1
            names = ["prev_tokens", *state_names(count)]
            outputs = ["log_probs", *state_names(count, ".out")]
            axes = {name: {0: "rows"} for name in [*names, *outputs]}
            trace_onnx(graph, example, out / STEP_FILE, outputs, axes, cell, names)
            probe = step_example(graph, PROBE_ROWS)
            if not graph_matches(
                out / STEP_FILE, graph(*probe), dict(zip(names, probe, strict=True))
            ):
                raise S2SError(
                    f"cell {cell!r}: its step does not trace to ONNX (the traced graph "
                    "computes something else for another batch), so the model cannot be exported"
                )
    atomic_write_bytes(out / tokenizer.model_file.name, tokenizer.model_file.read_bytes())
    shapes = [
        list(t.shape[1:]) for t in flatten_states(model.initial_states(1, torch.device("cpu")))
    ]
    return ExportConfig(
        task=config.task.type,
        src_tokenizer=tokenizer.model_file.name,
        tgt_tokenizer=tokenizer.model_file.name,
        decode=config.decode,
        state_count=count,
        encoder_buckets=[],
        max_source_length=0,
        precision="fp32",
        cells={"decoder": cell},
        graphs=DECODER_ONLY,
        state_shapes=shapes,
        word_level=config.tokenizer.model_type == "word",
    )
