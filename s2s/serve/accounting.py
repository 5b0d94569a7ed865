"""Counting and logging every request, as plain ASGI middleware (no per-request task or
stream, which Starlette's BaseHTTPMiddleware would add): its status and latency go to the
metrics and one JSON line to the access log; an exception a route did not handle is
logged with its traceback and answered 500, and the server keeps serving."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from s2s.serve.access_log import AccessLog
from s2s.serve.metrics import ServeMetrics

Scope = dict[str, Any]

INTERNAL_ERROR = json.dumps({"error": "internal error"}).encode()


class Accounting:
    def __init__(self, app: Any, metrics: ServeMetrics, log: AccessLog) -> None:
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def send_noting_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:  # a bug, not a request's fault
            logging.getLogger("s2s.serve").exception("%s %s failed", scope["method"], scope["path"])
            if not status[0]:
                await self._internal_error(send_noting_status)
        seconds = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", "unmatched")  # a label per route
        self.metrics.answered(route, status[0] or 500, seconds)
        self.log.request(scope, status[0] or 500, seconds)

    @staticmethod
    async def _internal_error(send: Any) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": INTERNAL_ERROR})
