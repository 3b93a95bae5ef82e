"""A RetrievalService over a real embedded Chroma, with a small word-hashing embedder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest

from retrieval.service import RetrievalService


class HashedWords:
    """Bag of hashed words, unit length: deterministic, instant, and needs no model download."""

    name = "hashed-words"
    dim = 64

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            v = [0.0] * self.dim
            for word in re.findall(r"\w+", text.lower()):
                v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            n = sum(x * x for x in v) ** 0.5 or 1.0
            out.append([x / n for x in v])
        return out


@pytest.fixture
def service(tmp_path) -> RetrievalService:
    return RetrievalService(
        bm25_dir=tmp_path / "bm25", chroma_path=tmp_path / "chroma", embedder=HashedWords()
    )


@pytest.fixture
def stored(service) -> Callable[..., set[str]]:
    """The chunk texts a tenant's collection holds (an empty set without a collection)."""

    def texts(tenant: str = "acme") -> set[str]:
        col = service.store.collection(tenant, HashedWords.name, create=False)
        return set(col.get(include=["documents"])["documents"]) if col is not None else set()

    return texts
