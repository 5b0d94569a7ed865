"""`s2s export`: a trained run as ONNX graphs that `s2s translate` (or `generate`,
`transcribe`) runs without PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from s2s.cli.common import (
    CheckpointOption,
    Quiet,
    ThreadsOption,
    app,
    computes,
    use_threads,
    user_errors,
)
from s2s.errors import S2SError

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)


@app.command("export")
@user_errors
@computes
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    out: Annotated[Path, typer.Option(help="Directory to write the exported model to.")],
    format: Annotated[str, typer.Option(help="Export format: onnx.")] = "onnx",
    quantize: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Quantise the graphs' weights: int8 (onnxruntime, dynamic)."),
    ] = None,
    checkpoint: CheckpointOption = None,
    threads: ThreadsOption = None,
    quiet: Quiet = False,
) -> None:
    """Export the encoder and the one-step decoder as ONNX graphs, with the tokeniser(s)
    and a JSON config, for `s2s translate OUT` (or `s2s generate OUT`, `s2s transcribe
    OUT`) on onnxruntime (docs/export.md)."""
    if format not in FORMATS:
        raise S2SError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise S2SError(f"--quantize {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    use_threads(threads)
    from s2s.export.onnx_export import export_run

    exported = export_run(run_dir, out, checkpoint, quantize)
    if not quiet:
        print(f"exported {run_dir} to {exported.out}: {', '.join(exported.files)}")
