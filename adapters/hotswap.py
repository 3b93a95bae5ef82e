"""Load and unload adapters in every vLLM replica at run time (vLLM's runtime LoRA API).

One asyncio lock per served name keeps concurrent loads of the same adapter from racing; what
each replica holds is tracked, and a replica that refuses is reported, never fatal: the next
request for that adapter loads it on demand.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import httpx


@dataclass
class ReplicaResult:
    """What one replica said to a load or unload."""

    url: str
    ok: bool
    detail: str = ""


class HotSwapper:
    """Adapter loads and unloads fanned out to every replica."""

    def __init__(self, vllm_urls: list[str], http: httpx.AsyncClient | None = None) -> None:
        self.urls = list(vllm_urls)
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
        self.loaded: dict[str, set[str]] = defaultdict(set)  # url -> served names
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _load_one(self, url: str, served_name: str, path: str) -> ReplicaResult:
        try:
            resp = await self.http.post(
                f"{url}/v1/load_lora_adapter", json={"lora_name": served_name, "lora_path": path}
            )
        except httpx.HTTPError as exc:
            return ReplicaResult(url, False, f"unreachable: {type(exc).__name__}")
        if resp.status_code == 200 or "already been loaded" in resp.text:
            self.loaded[url].add(served_name)
            return ReplicaResult(url, True)
        return ReplicaResult(url, False, f"HTTP {resp.status_code}: {resp.text[:300]}")

    async def _unload_one(self, url: str, served_name: str) -> ReplicaResult:
        try:
            resp = await self.http.post(
                f"{url}/v1/unload_lora_adapter", json={"lora_name": served_name}
            )
        except httpx.HTTPError as exc:
            return ReplicaResult(url, False, f"unreachable: {type(exc).__name__}")
        self.loaded[url].discard(served_name)
        # Unloading something the replica does not hold is fine: the goal state is reached.
        ok = resp.status_code == 200 or resp.status_code in (400, 404)
        return ReplicaResult(url, ok, "" if resp.status_code == 200 else resp.text[:300])

    async def load(self, served_name: str, path: str) -> list[ReplicaResult]:
        """Load into every replica; one result per replica."""
        async with self._locks[served_name]:
            return list(
                await asyncio.gather(*(self._load_one(u, served_name, path) for u in self.urls))
            )

    async def unload(self, served_name: str) -> list[ReplicaResult]:
        """Unload from every replica."""
        async with self._locks[served_name]:
            return list(
                await asyncio.gather(*(self._unload_one(u, served_name) for u in self.urls))
            )

    async def ensure_loaded(
        self, served_name: str, path: str, force: bool = False
    ) -> list[ReplicaResult]:
        """Load where not known to be loaded (or everywhere with `force`, e.g. after vLLM
        answered that it does not hold the adapter: it restarted or evicted it)."""
        missing = [u for u in self.urls if force or served_name not in self.loaded[u]]
        if not missing:
            return [ReplicaResult(u, True, "already loaded") for u in self.urls]
        async with self._locks[served_name]:
            missing = [u for u in missing if force or served_name not in self.loaded[u]]
            if force:
                for url in missing:
                    self.loaded[url].discard(served_name)
            return list(
                await asyncio.gather(*(self._load_one(u, served_name, path) for u in missing))
            )


def all_ok(results: list[ReplicaResult]) -> bool:
    return all(r.ok for r in results)


def any_ok(results: list[ReplicaResult]) -> bool:
    return any(r.ok for r in results)
