"""`s2s serve`: a trained run behind an HTTP JSON API (docs/serving.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from s2s.cli.common import (
    AmpOption,
    CheckpointOption,
    DecodeOverrides,
    Device,
    ThreadsOption,
    app,
    checked_amp,
    computes,
    setup_logging,
    use_threads,
    user_errors,
)
from s2s.errors import S2SError

if TYPE_CHECKING:
    from s2s.serve.app import ServeSettings


def positive(help: str) -> typer.models.OptionInfo:
    return typer.Option(min=1, help=help)


@app.command()
@user_errors
@computes
def serve(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `s2s train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    max_batch_tokens: Annotated[
        int, positive("Most source tokens merged from concurrent requests into one batch.")
    ] = 4000,
    max_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="Longest a lone request waits for others to join it.")
    ] = 10.0,
    max_queue: Annotated[int, positive("Requests waiting; more are answered 503.")] = 256,
    max_inputs: Annotated[int, positive("Most inputs in one request.")] = 64,
    max_input_chars: Annotated[int, positive("Most characters in one input.")] = 2000,
    max_body_bytes: Annotated[int, positive("Largest request body.")] = 1 << 20,
    request_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds before a request is answered 504.")
    ] = 30.0,
    continuous: Annotated[
        bool,
        typer.Option(
            help="Beam-search translations join the running search between steps "
            "(lower median latency, a longer tail for long inputs); off: batched."
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes: only 1 (docs/serving.md says why).")
    ] = 1,
    checkpoint: CheckpointOption = None,
    device: Device = "auto",
    amp: AmpOption = None,
    decode_overrides: DecodeOverrides = None,
    threads: ThreadsOption = None,
) -> None:
    """Serve a run over HTTP: POST /v1/<method> for each method its task offers
    (translate, transcribe, generate, score), /health, /ready, /metrics, /docs.

    Concurrent requests are merged into batches (with --continuous, beam-search
    translations join the running search between steps instead). SIGTERM stops accepting
    connections, finishes the queued requests and exits 0."""
    use_threads(threads)
    setup_logging(quiet=False)
    from s2s.serve.extra import require_serve_extra

    require_serve_extra()
    from s2s.serve.app import ServeSettings

    if workers != 1:
        raise S2SError("--workers: only 1 is supported (docs/serving.md)")
    settings = ServeSettings(
        max_batch_tokens,
        max_wait_ms,
        max_queue,
        max_inputs,
        max_input_chars,
        max_body_bytes,
        request_timeout,
        continuous=continuous,
    )
    decoding = {"device": device, "amp": checked_amp(amp), "threads": threads}
    serve_run(run_dir, checkpoint, decode_overrides, decoding, settings, (host, port))


def serve_run(
    run_dir: Path,
    checkpoint: Path | None,
    decode_overrides: list[str] | None,
    decoding: dict,
    settings: ServeSettings,
    address: tuple[str, int],
) -> None:
    """Load the run twice: here, on the CPU in full precision, only to count tokens and
    check options; and in the decoder process, with ``decoding``'s device, precision and
    threads, to decode. Serve until SIGTERM, then stop the decoder process."""
    from s2s.api import load
    from s2s.serve.decoder_process import DecoderProcess
    from s2s.serve.running import serve as run_server

    model = load(run_dir, device="cpu", threads=1, checkpoint=checkpoint, decode=decode_overrides)
    decoder = DecoderProcess(
        run_dir, {"checkpoint": checkpoint, "decode": decode_overrides, **decoding}
    )
    decoder.start()
    try:
        run_server(model, settings, *address, decoder)
    finally:
        decoder.stop()
