"""Load and unload adapters in every vLLM replica at run time (vLLM's runtime LoRA API).

One asyncio lock per served name keeps concurrent loads of the same adapter from racing; what
each replica holds is tracked, and a replica that refuses is reported, never fatal: the next
request for that adapter loads it on demand.
"""

from __future__ import annotations

import asyncio
import weakref
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

    def __init__(
        self,
        vllm_urls: list[str],
        http: httpx.AsyncClient | None = None,
        api_key: str | None = None,
    ) -> None:
        """`api_key`: what the replicas require on /v1 (vLLM's --api-key), if anything."""
        self.urls = list(vllm_urls)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0), headers=headers
        )
        # url -> served names: as many as the replicas hold (unloads and restarts remove them)
        self.loaded: dict[str, set[str]] = defaultdict(set)
        # One lock per served name while someone uses it: a lock nobody holds or waits for is
        # dropped with its last reference, so the map does not grow with every name ever seen.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, served_name: str) -> asyncio.Lock:
        lock = self._locks.get(served_name)
        if lock is None:
            lock = self._locks[served_name] = asyncio.Lock()
        return lock

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

    async def _load_one(self, url: str, served_name: str, path: str) -> ReplicaResult:
        try:
            resp = await self.http.post(
                f"{url}/v1/load_lora_adapter", json={"lora_name": served_name, "lora_path": path}
            )
        except httpx.HTTPError as exc:
            return ReplicaResult(url, False, f"unreachable: {type(exc).__name__}")
        # A served name is never reused for other weights (the registry never hands out a
        # version number twice), so a replica that already holds it holds these weights.
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

    async def load(self, lora_name: str, path: str) -> list[ReplicaResult]:
        """Load `lora_name` (a served name, `NAME-vN`) from `path` into every replica; one
        result per replica. A replica that refuses is reported, not raised."""
        async with self._lock(lora_name):
            return list(
                await asyncio.gather(*(self._load_one(u, lora_name, path) for u in self.urls))
            )

    async def unload(self, lora_name: str) -> list[ReplicaResult]:
        """Unload `lora_name` from every replica (not holding it counts as success)."""
        async with self._lock(lora_name):
            return list(await asyncio.gather(*(self._unload_one(u, lora_name) for u in self.urls)))

    async def held(self, url: str) -> set[str] | None:
        """The adapters replica `url` says it holds (`/v1/models`), or None if it cannot say.

        Also refreshes what is tracked for that replica: after a vLLM restart it holds nothing.
        """
        try:
            resp = await self.http.get(f"{url}/v1/models")
            resp.raise_for_status()
            cards = resp.json().get("data", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        # vLLM lists LoRA adapters as model cards whose `parent` is the base model.
        names = {c["id"] for c in cards if isinstance(c, dict) and c.get("parent")}
        self.loaded[url] = set(names)
        return names

    async def ensure_loaded(
        self, lora_name: str, path: str, force: bool = False
    ) -> list[ReplicaResult]:
        """Load `lora_name` wherever it is not loaded yet; one result per replica touched.

        Without `force`, what this object tracked is trusted (no request at all when every
        replica holds it). With `force` (the caller is unsure, e.g. vLLM just answered that it
        does not know the adapter: it restarted or evicted it), each replica's `/v1/models` is
        asked first and only those that lack the adapter are loaded.
        """
        missing = [u for u in self.urls if force or lora_name not in self.loaded[u]]
        if not missing:
            return [ReplicaResult(u, True, "already loaded") for u in self.urls]
        async with self._lock(lora_name):
            if force:
                held = await asyncio.gather(*(self.held(u) for u in missing))
                missing = [u for u, names in zip(missing, held, strict=True)
                           if names is None or lora_name not in names]  # fmt: skip
            else:  # another task may have loaded it while this one waited for the lock
                missing = [u for u in missing if lora_name not in self.loaded[u]]
            results = await asyncio.gather(*(self._load_one(u, lora_name, path) for u in missing))
        done = {r.url for r in results}
        return list(results) + [
            ReplicaResult(u, True, "already loaded") for u in self.urls if u not in done
        ]


def any_ok(results: list[ReplicaResult]) -> bool:
    """At least one replica succeeded (enough to serve; the others load on their next miss)."""
    return any(r.ok for r in results)
