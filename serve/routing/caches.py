"""The two caches on the router's hot path: query embeddings, and each tenant's adapter list.

`CachedEmbedder` wraps the one embedder the router and retrieval share: the router embeds the
query to match exemplars, then retrieval's search asks for the same text and gets the vector
back from here instead of running the model again.

`AdapterCatalog` keeps each tenant's prod adapters (with their exemplars) in memory. It is
cleared by `invalidate()`, which the adapter admin calls after register, promote, roll back,
remove and reload (a CLI change reaches a running gateway through `POST /v1/adapters/reload`).
Changes nobody tells this process about (another gateway replica's admin call, a CLI change
while the gateway was unreachable) are caught by a cheap check, at most every
`check_interval_s`: a digest of every adapter's owner, sharing and prod pointer, which is all
that decides what `list_for_tenant` returns (versions themselves never change).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from sqlalchemy import Engine, select

from adapters.models import AdapterRow
from adapters.registry import AdapterVersion
from serve.lru import LRU

SMALL_CALL = 8  # texts per call worth caching: queries and exemplars, not ingest batches


class Embedder(Protocol):
    """Unit-length embeddings (retrieval's protocol: a name, a dimension, embed)."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


class CachedEmbedder:
    """An embedder with a bounded least-recently-used cache per text, safe across threads."""

    def __init__(self, inner: Embedder, max_items: int = 1024, threads: int = 0) -> None:
        """`threads`: torch intra-op threads to set before the first embedding (0: leave
        torch's default). A process-wide setting: the gateway sets it, the CLI does not."""
        self.inner = inner
        self.threads = threads
        self._threads_set = False
        self.name = inner.name  # collections record the model's name: it must not change
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self.inner.dim

    def clear(self) -> None:
        """Forget every cached vector."""
        with self._lock:
            self._cache.clear()

    def cached(self, text: str) -> list[float] | None:
        """The vector of `text` if it is cached (the model is never run; hit counts unchanged):
        for reusing the router's embedding of a query after the request."""
        with self._lock:
            return self._cache.get(text)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors in the order of `texts`; only texts not seen recently reach the model."""
        self._set_threads()
        if len(texts) > SMALL_CALL:
            # An ingest batch: caching it would evict the queries this cache exists for.
            return self.inner.embed(texts)
        found: dict[str, list[float]] = {}
        with self._lock:
            for t in texts:
                if t in self._cache:
                    self._cache.move_to_end(t)
                    found[t] = self._cache[t]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vectors = self.inner.embed(missing)
            with self._lock:
                for t, v in zip(missing, vectors, strict=True):
                    found[t] = v
                    self._cache[t] = v
                    self._cache.move_to_end(t)
                while len(self._cache) > self.max_items:
                    self._cache.popitem(last=False)
        return [found[t] for t in texts]

    def _set_threads(self) -> None:
        # Measured on 2 shared cores under load (bench/router.py): a routing decision's p50 was
        # 19.5 ms with one thread, 151-323 ms with torch's default two, which then contend
        # with each other and with vLLM.
        if self.threads and not self._threads_set:
            import torch

            torch.set_num_threads(self.threads)
            self._threads_set = True


class Registry(Protocol):
    """What the catalog reads from the adapter registry."""

    engine: Engine

    def list_for_tenant(self, tenant: str) -> list[AdapterVersion]: ...

    def resolve_for_tenant(self, model: str, tenant: str) -> AdapterVersion | None: ...


class AdapterCatalog:
    """Each tenant's prod adapters, cached until a change (see the module docstring)."""

    def __init__(
        self, registry: Registry, check_interval_s: float = 2.0, max_tenants: int = 4096
    ) -> None:
        """`max_tenants`: lists kept at most (the least recently used go first)."""
        self.registry = registry
        self.check_interval_s = check_interval_s
        self.loads = 0  # how often a tenant's list was read from the database
        # Per tenant id: bounded, since tenants come and go and ids are never reused.
        self._lists: LRU[str, list[AdapterVersion]] = LRU(max_tenants)
        self._stamp: str | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def invalidate(self, name: str | None = None) -> None:
        """Forget every tenant's list (`name`, the adapter that changed, is for the callers'
        convenience: sharing changes can move an adapter into any tenant's list)."""
        with self._lock:
            self._lists.clear()
            self._stamp = None
            self._checked = 0.0

    def resolve_for_tenant(self, model: str, tenant: str) -> AdapterVersion | None:
        """An explicitly named adapter: always read (names may carry `@N`)."""
        return self.registry.resolve_for_tenant(model, tenant)

    def list_for_tenant(self, tenant: str) -> list[AdapterVersion]:
        """Prod versions `tenant` may use, from memory when nothing changed."""
        self._check()
        with self._lock:
            hit = self._lists.get(tenant)
        if hit is not None:
            return hit
        found = self.registry.list_for_tenant(tenant)
        with self._lock:
            self.loads += 1
            self._lists[tenant] = found
        return found

    def _check(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_interval_s:
            return
        stamp = self.stamp()
        with self._lock:
            if stamp != self._stamp:
                self._lists.clear()
                self._stamp = stamp
            self._checked = now

    def stamp(self) -> str:
        """A digest of what decides every tenant's list: owners, sharing, prod pointers."""
        engine = getattr(self.registry, "engine", None)
        if engine is None:
            return ""
        query = select(
            AdapterRow.name, AdapterRow.owner, AdapterRow.shared_with, AdapterRow.prod_history
        ).order_by(AdapterRow.name)
        with engine.connect() as conn:
            rows: list[Any] = [
                (n, o, s, (p or [])[-1:]) for n, o, s, p in conn.execute(query).all()
            ]
        return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()
