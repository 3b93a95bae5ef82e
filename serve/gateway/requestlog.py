"""The request log: one JSON line per chat completion in data/logs/requests.log.

The same facts as the response's `loraplex` block, the `x-loraplex-*` headers and the metrics
(tenant, model, route, adapter, status, latency, tokens), kept per request so a team can answer
"which path did this tenant's traffic take yesterday, and why" without a metrics backend.
Prompts and answers are not logged: they may hold personal data.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("loraplex.gateway")


class RequestLog:
    """Append-only JSON lines to `path` (the directory is made when the app starts), rotated
    by size like logging's RotatingFileHandler: `path` becomes `path.1`, `path.1` becomes
    `path.2`, ... up to `backups` (0 backups or 0 bytes: never rotated).

    The request path (one thread: the event loop) only queues the line; a writer thread
    appends it within `interval_s`, one unbuffered `write` per line, the size kept in
    memory. A disk write on the event loop stalls every request in flight whenever the disk
    is busy (measured: 2-6 ms a line on a shared machine, the largest single cost of a chat
    request; bench/gateway_profile.py), and the logging module's handler added two `stat`
    calls and a `seek` per line. `flush()` waits until what was queued is on disk;
    `close()` writes what is queued, then stops.
    """

    def __init__(
        self, path: Path, max_bytes: int = 20 << 20, backups: int = 3, interval_s: float = 0.05
    ) -> None:
        """`interval_s`: how often the writer thread looks for queued lines."""
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.interval_s = interval_s
        # A deque the writer thread polls, not a queue that wakes it: waking a thread on
        # every request costs a context switch on a busy machine.
        self._pending: collections.deque[bytes] = collections.deque()
        self._queued = 0  # lines handed to write(), counted by the request path only
        self._written = 0  # lines the writer thread has dealt with (written or failed)
        self._done = threading.Condition()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._file: BinaryIO | None = None
        self._size = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._thread is None:
            self._reopen()
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="loraplex-request-log", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every line written so far is on disk (False: not within `timeout_s`)."""
        if self._thread is None:
            return True
        target = self._queued
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._written >= target, timeout_s)

    def write(self, **facts: Any) -> None:
        """One line: the time plus `facts` (JSON-ready values). Outside open/close, nothing."""
        if self._thread is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = json.dumps({"time": stamp, **facts}, separators=(",", ":")) + "\n"
        self._pending.append(line.encode())
        self._queued += 1

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            stopping = self._stopping  # read before draining: close() wants everything
            while self._pending:
                try:
                    self._append(self._pending.popleft())
                except OSError as exc:
                    # A full or failing disk must not stop the log (nor ever fail a request).
                    log.warning("request log %s: %s", self.path, exc)
                with self._done:
                    self._written += 1
                    self._done.notify_all()
            if stopping:
                return

    def _append(self, line: bytes) -> None:
        if self._file is None:
            self._reopen()  # a rotation failed half-way: try again
        elif self._full(len(line)):
            self._rotate()
        assert self._file is not None
        self._file.write(line)
        self._size += len(line)

    def _reopen(self) -> None:
        self._file = self.path.open("ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size

    def _full(self, adding: int) -> bool:
        if self.max_bytes <= 0 or self.backups <= 0:
            return False  # as RotatingFileHandler: either at 0 means never rotate
        return self._size > 0 and self._size + adding >= self.max_bytes

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._reopen()
