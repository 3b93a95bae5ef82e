"""Every in-memory map that grows with traffic or tenants has a bound."""

from __future__ import annotations

import asyncio
import gc

import httpx
import pytest

from adapters.hotswap import HotSwapper
from serve.database import make_engine, migrate
from serve.lru import LRU
from serve.routing import Router
from serve.routing.caches import AdapterCatalog, CachedEmbedder
from serve.tenants import Tenant, TenantPolicy, TenantService


def test_lru_keeps_the_most_recently_used() -> None:
    cache: LRU[str, int] = LRU(3)
    for i, key in enumerate("abc"):
        cache[key] = i
    assert cache.get("a") == 0  # a is now the newest
    cache["d"] = 3
    assert "b" not in cache and len(cache) == 3 and cache.evictions == 1
    assert [cache.get(k) for k in "acd"] == [0, 2, 3]
    assert cache.pop("a") == 0 and cache.get("a", -1) == -1
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        LRU(0)


def test_the_tenant_key_cache_is_bounded(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    migrate(url)
    svc = TenantService(make_engine(url), max_cached_keys=5)
    keys = [svc.add_key("acme") for _ in range(11) if svc.get("acme") or svc.create("acme")]
    for key in keys:
        assert svc.authenticate(key).name == "acme"
    assert len(svc._cache) == 5
    assert svc.cached(keys[-1]) is not None and svc.cached(keys[0]) is None  # oldest went first


class _Registry:
    def __init__(self) -> None:
        self.engine = None
        self.reads = 0

    def list_for_tenant(self, tenant: str) -> list:
        self.reads += 1
        return []

    def resolve_for_tenant(self, model: str, tenant: str):
        return None


def test_the_adapter_catalog_keeps_a_bounded_number_of_tenants() -> None:
    registry = _Registry()
    catalog = AdapterCatalog(registry, max_tenants=10)
    for i in range(1000):
        catalog.list_for_tenant(f"tenant-{i}")
    assert len(catalog._lists) == 10 and registry.reads == 1000
    catalog.list_for_tenant("tenant-999")  # recent: still cached
    assert registry.reads == 1000


def test_the_router_keeps_bounded_versions_and_exemplar_vectors(fakes) -> None:
    router = Router("base", fakes.Registry([]), fakes.Retrieval(), max_tenants=8, max_adapters=8)
    for i in range(100):
        router.model_for(Tenant(f"t{i}", TenantPolicy(), id=f"id-{i}"))
        router.exemplar_vectors(fakes.av(f"a{i}", ["extract the person as json"]))
    assert len(router._models) == 8 and len(router._exemplars) == 8


def test_the_embedding_cache_is_bounded(fakes) -> None:
    embedder = CachedEmbedder(fakes.BagOfWords(), max_items=16)
    for i in range(200):
        embedder.embed([f"query {i}"])
    assert len(embedder._cache) == 16


def test_hotswap_locks_go_when_nobody_holds_them(fake_replicas) -> None:
    handler, held, _ = fake_replicas(refuse=set())
    swap = HotSwapper(["http://a"], httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    async def run() -> None:
        for i in range(200):
            await swap.ensure_loaded(f"x{i}-v1", "/store/x")
            await swap.unload(f"x{i}-v1")
        # two concurrent loads of one name still share one lock
        a, b = await asyncio.gather(swap.load("y-v1", "/s"), swap.load("y-v1", "/s"))
        assert a[0].ok and b[0].ok

    asyncio.run(run())
    gc.collect()
    assert len(swap._locks) == 0
    assert swap.loaded["http://a"] == {"y-v1"} and held == {"a": {"y-v1"}}
