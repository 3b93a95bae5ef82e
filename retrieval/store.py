"""Chroma, one collection per tenant: embedded (`PersistentClient`) by default, a server by URL.

The tenant is a required argument of every call and the collection name is derived from it here,
never taken from a caller, so no query can reach another tenant's chunks. Each collection records
the embedding model it was built with and a version that changes on every write; the BM25 index
(see `bm25.py`) is keyed by that version, which keeps gateway replicas that share one Chroma
server in step.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from retrieval.errors import RetrievalError

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
VERSION_KEY = "lpx_version"
MODEL_KEY = "embedding_model"


def check_tenant(tenant: str) -> str:
    """The tenant name, if it is safe as a collection name and a directory name."""
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise RetrievalError(
            f"tenant {tenant!r} is invalid: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit",
            "invalid_tenant",
        )
    return tenant


def collection_name(tenant: str) -> str:
    """The Chroma collection that holds `tenant`'s chunks."""
    return f"lpx_{check_tenant(tenant)}_docs"


def version(col: Any) -> str:
    """The collection's write version ('' for one written before versions were recorded)."""
    return str((col.metadata or {}).get(VERSION_KEY, ""))


def chroma_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """An equality filter `{field: value, ...}` in Chroma's syntax (`$and` for several)."""
    if not where:
        return None
    if len(where) == 1:
        return dict(where)
    return {"$and": [{k: v} for k, v in where.items()]}


def _is_connection_error(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, httpx.TransportError | ConnectionError):
        return True
    # chromadb.HttpClient checks the server when it is built and raises a bare ValueError.
    return isinstance(exc, ValueError) and "could not connect" in str(exc).lower()


def _is_not_found(exc: BaseException) -> bool:
    # NotFoundError or ValueError, by Chroma version.
    text = str(exc).lower()
    return "does not exist" in text or "not found" in text


class ChromaStore:
    """Lazily opened Chroma client plus the per-tenant collection rules."""

    def __init__(self, path: Path | None = None, url: str | None = None) -> None:
        if (path is None) == (url is None):
            raise ValueError("give exactly one of a Chroma path (embedded) or URL (server)")
        self.path = Path(path) if path is not None else None
        self.url = url
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The Chroma client, created on first use (telemetry off)."""
        with self._lock:
            if self._client is None:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                settings = ChromaSettings(anonymized_telemetry=False)
                if self.url:
                    url = urlparse(self.url)
                    self._client = chromadb.HttpClient(
                        host=url.hostname or "127.0.0.1",
                        port=url.port or (443 if url.scheme == "https" else 8000),
                        ssl=url.scheme == "https",
                        settings=settings,
                    )
                else:
                    assert self.path is not None
                    self._client = chromadb.PersistentClient(str(self.path), settings=settings)
            return self._client

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a lost Chroma server into a 503 the gateway can report (server mode only)."""
        try:
            yield
        except RetrievalError:
            raise
        except Exception as exc:
            if self.url and _is_connection_error(exc):
                raise RetrievalError(
                    f"the Chroma server at {self.url} is unreachable ({type(exc).__name__}); "
                    "check that it is running and that chroma_url is right",
                    "retrieval_unavailable",
                    "unavailable",
                ) from None
            raise

    def collection(self, tenant: str, model: str, create: bool) -> Any:
        """The tenant's collection (None if absent and not `create`); refuses another model's."""
        name = collection_name(tenant)
        with self.guard():
            if create:
                col = self.client().get_or_create_collection(
                    name,
                    metadata={"hnsw:space": "cosine", MODEL_KEY: model, VERSION_KEY: "empty"},
                    embedding_function=None,  # Chroma's default would download a model
                )
            else:
                try:
                    col = self.client().get_collection(name, embedding_function=None)
                except Exception as exc:
                    if _is_not_found(exc):
                        return None
                    raise
        recorded = (col.metadata or {}).get(MODEL_KEY)
        if recorded and recorded != model:
            raise RetrievalError(
                f"tenant {tenant!r}'s documents were embedded with {recorded!r}, but this service "
                f"uses {model!r}; configure the same embedding model, or delete the tenant's "
                "documents and ingest them again",
                "embedding_model_mismatch",
                "conflict",
            )
        return col

    def drop(self, tenant: str) -> bool:
        """Delete the tenant's collection, whatever model built it; False if there was none."""
        with self.guard():
            try:
                self.client().delete_collection(collection_name(tenant))
            except Exception as exc:
                if _is_not_found(exc):
                    return False
                raise
        return True

    def bump_version(self, col: Any) -> None:
        """Mark the collection as changed, so every BM25 index built from it goes stale."""
        # Chroma refuses to change the distance function after creation: pass the rest back.
        kept = {k: v for k, v in (col.metadata or {}).items() if not k.startswith("hnsw:")}
        col.modify(metadata={**kept, VERSION_KEY: uuid.uuid4().hex})
