"""Bringing vLLM in line with the registry: on the replicas themselves, or through a gateway.

`ReplicaSync` runs inside the gateway: it loads each prod version (and each running canary's
version) into every replica and unloads the other versions. `GatewayNotifier` runs in the CLI,
which edits the registry directly: it asks a running gateway to do the same
(`POST /v1/adapters/reload`), and when none answers nothing is lost, since a gateway loads what
vLLM lacks on the first request.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import httpx

from adapters.hotswap import HotSwapper
from adapters.registry import SERVED_RE, AdapterRegistry
from serve.admin.adapters import SyncReport


class ReplicaSync:
    """Load prod and canary versions into every replica, unload the versions that are neither."""

    def __init__(self, registry: AdapterRegistry, hotswap: HotSwapper) -> None:
        self.registry = registry
        self.hotswap = hotswap

    async def sync(self, name: str | None) -> SyncReport:
        """Running canaries count as served (both versions stay loaded). A request for `NAME@N`
        of a version unloaded here loads it again on demand."""
        versions = await asyncio.to_thread(self.registry.versions, None, name)
        trials = await asyncio.to_thread(self.registry.canaries, name, True)
        canaries = {c.ref for c in trials}
        prod = [av for av in versions if av.is_prod or av.ref in canaries]
        load: dict[str, Any] = {}
        for av in prod:
            results = await self.hotswap.ensure_loaded(av.served_name, str(av.path))
            load[av.ref] = [asdict(r) for r in results]
        keep = {av.served_name for av in prod}
        tracked: set[str] = set().union(*self.hotswap.loaded.values())
        unload: dict[str, Any] = {}
        for served in sorted(tracked - keep):
            match = SERVED_RE.match(served)
            if match is not None and (name is None or match["name"] == name):
                unload[served] = [asdict(r) for r in await self.hotswap.unload(served)]
        return {"load": load, "unload": unload}


class GatewayNotifier:
    """Ask a running gateway to sync; a gateway that does not answer is reported, not fatal."""

    def __init__(self, url: str, admin_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key

    async def sync(self, name: str | None) -> SyncReport:
        """The gateway's report, or a note saying why there is none."""
        if self.admin_key is None:
            return {
                "load": {},
                "unload": {},
                "note": "no admin key to tell a running gateway with (--admin-key)",
            }
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                resp = await http.post(
                    f"{self.url}/v1/adapters/reload",
                    json={"name": name},
                    headers={"Authorization": f"Bearer {self.admin_key}"},
                )
        except httpx.HTTPError:
            return {"load": {}, "unload": {}, "note": f"no gateway answers at {self.url}"}
        if resp.status_code != 200:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:200]
            return {
                "load": {},
                "unload": {},
                "warning": f"gateway at {self.url} answered {resp.status_code}: {message}",
            }
        report: SyncReport = resp.json()
        report["gateway"] = self.url
        return report
