"""Whether the serve extra is installed, asked before anything imports it."""

from __future__ import annotations

from s2s.errors import S2SError

MISSING_EXTRA = "s2s serve needs the serve extra: pip install 's2s[serve]'"


def require_serve_extra() -> None:
    """A one-line error when FastAPI, uvicorn or prometheus-client is not installed."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise S2SError(MISSING_EXTRA) from None
