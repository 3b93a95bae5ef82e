"""The embedding cache and the per-tenant adapter list cache, with a real registry."""

from __future__ import annotations

from adapters.registry import AdapterRegistry
from serve.routing.caches import AdapterCatalog, CachedEmbedder


class Counting:
    name = "counting"
    dim = 2

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts += texts
        return [[float(len(t)), 1.0] for t in texts]


def test_cached_embedder_embeds_each_text_once_and_stays_bounded() -> None:
    inner = Counting()
    cache = CachedEmbedder(inner, max_items=2)
    assert cache.name == "counting" and cache.dim == 2
    assert cache.embed(["a", "bb"]) == [[1.0, 1.0], [2.0, 1.0]]
    assert cache.embed(["bb", "a", "a"]) == [[2.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    assert inner.texts == ["a", "bb"] and (cache.hits, cache.misses) == (3, 2)
    cache.embed(["ccc"])  # evicts "bb", the least recently used
    cache.embed(["a"])
    cache.embed(["bb"])
    assert inner.texts == ["a", "bb", "ccc", "bb"]
    big = [f"chunk {i}" for i in range(20)]
    cache.embed(big)
    cache.embed(big)
    assert inner.texts.count("chunk 0") == 2  # ingest batches pass through uncached


def test_adapter_catalog_caches_until_a_change(registry, make, tmp_path) -> None:
    a1 = make(tmp_path / "a1", seed=1)
    a2 = make(tmp_path / "a2", seed=2)
    registry.register(a1, "orders", owner="acme", exemplars=["extract the order"])
    catalog = AdapterCatalog(registry, check_interval_s=3600)
    assert [a.ref for a in catalog.list_for_tenant("acme")] == ["orders@1"]
    assert [a.ref for a in catalog.list_for_tenant("acme")] == ["orders@1"]
    assert catalog.loads == 1
    registry.register(a2, "orders", owner="acme", exemplars=["extract"])
    assert [a.ref for a in catalog.list_for_tenant("acme")] == ["orders@1"]  # not told yet
    catalog.invalidate("orders")  # what the adapter admin does after register/promote/...
    assert [a.ref for a in catalog.list_for_tenant("acme")] == ["orders@2"]
    assert catalog.list_for_tenant("globex") == []


def test_adapter_catalog_sees_another_processes_change(registry, make, tmp_path) -> None:
    """The CLI changes the registry from another process: the cheap stamp check catches it
    even when no reload reaches this process."""
    registry.register(make(tmp_path / "a1", seed=1), "orders", owner="acme", exemplars=["x"])
    registry.register(make(tmp_path / "a2", seed=2), "orders", owner="acme", exemplars=["y"])
    catalog = AdapterCatalog(registry, check_interval_s=0)
    assert [a.version for a in catalog.list_for_tenant("acme")] == [2]
    other = AdapterRegistry(
        str(registry.engine.url), registry.store.root, base_model="tiny-base", max_rank=16
    )
    other.rollback("orders")
    assert [a.version for a in catalog.list_for_tenant("acme")] == [1]
    loads = catalog.loads
    catalog.list_for_tenant("acme")
    assert catalog.loads == loads  # unchanged stamp: served from memory


def test_threads_are_set_once_before_the_first_embedding(monkeypatch) -> None:
    import torch

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    cache = CachedEmbedder(Counting(), threads=1)
    assert calls == []  # nothing at construction: a command that never embeds pays nothing
    cache.embed(["a"])
    cache.embed(["b"])
    assert calls == [1]
    CachedEmbedder(Counting()).embed(["a"])  # 0: torch's default is left alone
    assert calls == [1]
