"""Fakes for routing tests: a bag-of-words embedder, a registry and a retrieval service."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.registry import AdapterVersion
from retrieval.search import Hit, SearchResult
from serve.routing import Router
from serve.tenants import Tenant, TenantPolicy

WORDS = ["json", "extract", "person", "weather", "capital", "france", "kettle", "price", "order"]


class BagOfWords:
    """Unit vectors over a fixed vocabulary; counts the texts it embeds."""

    name = "bow"
    dim = len(WORDS)

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        out = []
        for t in texts:
            v = [float(w in t.lower()) for w in WORDS]
            n = sum(x * x for x in v) ** 0.5 or 1.0
            out.append([x / n for x in v])
        return out


def av(name: str, exemplars=(), owner: str = "acme", version: int = 1) -> AdapterVersion:
    """A registry version as the router sees it."""
    return AdapterVersion(
        name=name, version=version, digest="0" * 64, path=Path("/nowhere"), base_model="base",
        rank=8, alpha=8.0, target_modules=["q_proj"], size_bytes=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC), owner=owner, is_prod=True,
        exemplars=list(exemplars),
    )  # fmt: skip


class Registry:
    """Adapters by name, each usable by its owner only; counts list calls."""

    def __init__(self, adapters):
        self.adapters = {a.name: a for a in adapters}
        self.lists = 0

    def resolve_for_tenant(self, model, tenant):
        found = self.adapters.get(model.partition("@")[0])
        return found if found is not None and found.owner == tenant else None

    def list_for_tenant(self, tenant):
        self.lists += 1
        return [a for a in self.adapters.values() if a.owner == tenant]


class Retrieval:
    """Strong hits (relevance `top`) for queries that mention the kettle, weak ones otherwise."""

    def __init__(self, top: float = 0.9, embedder=None):
        self.top = top
        self.embedder = embedder or BagOfWords()
        self.searches: list[str] = []

    def search(self, tenant, query, top_k=4, where=None, mode="hybrid"):
        self.searches.append(query)
        self.embedder.embed([query])  # as the real search does: the shared cache absorbs it
        top = self.top if "kettle" in query.lower() else 0.1
        hits = [
            Hit(
                "c1",
                "kettle",
                "kettle.md",
                "",
                "The SKU-4471 kettle costs 39 euros.",
                1.0,
                top,
                dense=top,
            ),
            Hit("c2", "hours", "hours.md", "", "Open 9 to 5.", 0.5, 0.05, dense=0.05),
        ]
        return SearchResult(hits, {"top": top, "margin": top - 0.05, "fused_top": 1.0})


ACME = Tenant("acme", TenantPolicy())
JSON_EXTRACT = av("json-extract", ["Extract the person as JSON"])


@pytest.fixture
def reg() -> Registry:
    return Registry([JSON_EXTRACT])


@pytest.fixture
def router(reg) -> Router:
    return Router("base", reg, Retrieval(0.9))


@pytest.fixture
def fakes():
    """The fakes above, for tests that build their own router (test modules cannot import
    conftest under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        BagOfWords=BagOfWords, Registry=Registry, Retrieval=Retrieval, av=av, ACME=ACME
    )
