"""Running the app under uvicorn: one HTTP process, one batcher thread, and a graceful end.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits for the requests in
flight, whose jobs the decoder finishes; then the app's shutdown drains the queue and the
process exits 0. uvicorn re-raises the signal it caught once it is done, so the handler it
restores is one that only notes the signal."""

from __future__ import annotations

import signal
from typing import Any

from s2s.errors import S2SError
from s2s.serve.app import Decoder, ServeSettings, create_app


def serve(
    model: Any, settings: ServeSettings, host: str, port: int, decoder: Decoder | None = None
) -> None:
    """Serve ``model`` on ``host:port`` until SIGTERM or SIGINT, then drain and return."""
    import uvicorn

    app = create_app(model, settings, decoder)
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    caught: list[int] = []
    before = {
        sig: signal.signal(sig, lambda number, _: caught.append(number))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if not server.started:
        raise S2SError(f"could not serve on {host}:{port} (is the port in use?)")
