"""Structured access logs: one JSON object per request on stderr (logger ``s2s.access``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class AccessLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def request(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        client = scope.get("client")
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "ms": round(seconds * 1000, 2),
            "inputs": scope.get("state", {}).get("inputs"),
        }
        self.logger.info(json.dumps(record))


def access_logger() -> AccessLog:
    """The access log, writing plain JSON lines to stderr (set up once per process)."""
    logger = logging.getLogger("s2s.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return AccessLog(logger)
