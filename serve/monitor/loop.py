"""The gateway's production loop: every few seconds, write what the requests did, update the
drift gauges, judge running canaries (and roll back the worse ones), and, hourly, delete what
is older than each tenant's retention period. Request records are written within
`WRITE_EVERY_S` of the answer (a second task): feedback on an answer may reach another gateway
at once, and finds the record only in the database.

Nothing here runs on the request path; a failing step is logged and tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from serve.feedback.recorder import Recorder
from serve.gateway.metrics import Metrics
from serve.monitor.canary import Rollout
from serve.services import Services

log = logging.getLogger("loraplex.monitor")
PURGE_EVERY_S = 3600.0
# Queued request records are written this often (their drift statistics at the next tick).
WRITE_EVERY_S = 0.1
# How long feedback looks for a completion it does not find at first: ten write intervals, so
# another gateway's record lands meanwhile even when its database write is slow; an id nobody
# issued is a 404 after this long.
FEEDBACK_LOOKUP_WAIT_S = 1.0


class ProductionLoop:
    """One gateway's periodic work for feedback, drift and canaries."""

    def __init__(
        self,
        services: Services,
        recorder: Recorder,
        rollout: Rollout,
        metrics: Metrics,
        interval_s: float = 5.0,
    ) -> None:
        self.services = services
        self.recorder = recorder
        self.rollout = rollout
        self.metrics = metrics
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._purged_at = float("-inf")
        self._warned: dict[
            str, set[tuple[str, str | None]]
        ] = {}  # tenant -> warnings already logged
        self._dropped_seen = 0

    def start(self) -> None:
        """Run `tick` every `interval_s` in the background (inside the gateway's event loop)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="production-loop")
        self._writer = loop.create_task(self._write_soon(), name="request-records")

    async def stop(self) -> None:
        """Stop, writing what is still queued."""
        for task in (self._task, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.to_thread(self.recorder.flush)

    async def _write_soon(self) -> None:
        while True:
            await asyncio.sleep(WRITE_EVERY_S)
            if not self.recorder.queued():
                continue
            try:
                await asyncio.to_thread(self.recorder.write)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("writing request records failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.tick()

    async def tick(self) -> dict[str, Any]:
        """One round; returns what it did (for tests and logs)."""
        done: dict[str, Any] = {}
        for step in (self._flush, self._gauges, self._canaries, self._purge):
            try:
                done[step.__name__.strip("_")] = await step()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("production loop step %s failed", step.__name__)
        return done

    async def _flush(self) -> int:
        written = await asyncio.to_thread(self.recorder.flush)
        stats = self.recorder.stats
        self.metrics.records_pending.set(self.recorder.pending())
        self.metrics.records_dropped.set(stats.dropped)
        if stats.dropped > self._dropped_seen:
            log.warning(
                "%d request records dropped: the queue was full (the database too slow?)",
                stats.dropped - self._dropped_seen,
            )
            self._dropped_seen = stats.dropped
        return written

    async def _gauges(self) -> list[str]:
        touched = self.recorder.take_touched()
        if not touched:
            return []
        return await asyncio.to_thread(self._update_gauges, touched)

    def _update_gauges(self, tenant_ids: set[str]) -> list[str]:
        monitor = self.services.monitor
        names = self.services.tenants.names()
        updated = []
        for tid in sorted(tenant_ids):
            name = names.get(tid)
            tenant = self.services.tenants.get(name) if name else None
            if tenant is None:
                continue  # deleted meanwhile
            report = monitor.report(tenant, questions=False)
            self.metrics.observe_drift(tenant.name, report)
            self._log_warnings(tenant.name, report["warnings"])
            updated.append(tenant.name)
        return updated

    def _log_warnings(self, tenant: str, warnings: list[dict[str, Any]]) -> None:
        # Log a warning when it appears, not on every tick while it lasts.
        before = self._warned.get(tenant, set())
        now = {(w["metric"], w["adapter"]) for w in warnings}
        for w in warnings:
            if (w["metric"], w["adapter"]) not in before:
                log.warning("monitor: tenant %s: %s", tenant, w["message"])
        self._warned[tenant] = now

    async def _canaries(self) -> list[str]:
        canaries = self.services.canaries
        ended = await asyncio.to_thread(canaries.check)
        names = []
        for canary, reasons in ended:
            log.warning(
                "canary %s rolled back automatically (prod stays %s): %s",
                canary.ref,
                canary.prod_ref,
                "; ".join(reasons),
            )
            self.metrics.canary_rollbacks.labels(canary.name).inc()
            names.append(canary.name)
        if ended:
            self.rollout.invalidate()
            for name in names:
                await self.services.adapters.sync(name)  # unload the canary version
        running = await asyncio.to_thread(canaries.running)
        self.metrics.observe_canaries(running, names)
        return [c.ref for c, _ in ended]

    async def _purge(self) -> dict[str, int]:
        if time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return {}
        self._purged_at = time.monotonic()
        tenants = await asyncio.to_thread(self.services.tenants.list)
        counts = await asyncio.to_thread(self.services.feedback.purge, tenants)
        if any(counts.values()):
            log.info("retention: deleted %s", counts)
        return counts
