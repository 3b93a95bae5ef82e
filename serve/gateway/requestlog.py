"""The request log: one JSON line per chat completion in data/logs/requests.log.

The same facts as the response's `loraplex` block, the `x-loraplex-*` headers and the metrics
(tenant, model, route, adapter, status, latency, tokens), kept per request so a team can answer
"which path did this tenant's traffic take yesterday, and why" without a metrics backend.
Prompts and answers are not logged: they may hold personal data.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any


class RequestLog:
    """Append-only JSON lines to `path` (the directory is made when the app starts)."""

    def __init__(self, path: Path, max_bytes: int = 20 << 20, backups: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._logger = logging.getLogger(f"loraplex.requests.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Rotated by size: a busy gateway must not fill the disk with its own log.
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8"
        )
        self._logger.addHandler(self._handler)

    def close(self) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def write(self, **facts: Any) -> None:
        """One line: the time plus `facts` (JSON-ready values)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._logger.info(json.dumps({"time": stamp, **facts}, separators=(",", ":")))
