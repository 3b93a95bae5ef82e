"""Chroma, one collection per tenant: embedded (`PersistentClient`) by default, a server by URL.

The tenant is a required argument of every call and the collection name is derived from it here,
never taken from a caller, so no query can reach another tenant's chunks. Each collection records
the embedding model it was built with and a version that changes on every write; the BM25 index
(see `bm25.py`) is keyed by that version, which keeps gateway replicas that share one Chroma
server in step.

Several processes on one embedded path (a gateway and `loraplex ingest`). Chroma's embedded
client keeps each collection's vector index in memory and does not see vectors another process
wrote (its SQLite side, and so the documents, it does see): ids the lexical leg found then fail
the dense look-up ("Error finding id"). A process notes the version it last saw of each
collection; when a collection's version changed and this process did not write it, the client
is closed and opened again (`reopen`), which reloads the vector index from disk and the write
log. All stores on one path in a process share one client (Chroma caches one system per path
anyway), and a gate lets a reopen wait until calls on the old client are done.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


# Rows per `get` that returns documents or metadata: Chroma's SQLite look-up binds one variable
# per row and fails past SQLite's limit of 32,766 ("too many SQL variables").
GET_PAGE = 10_000


def get_all(col: Any, include: list[str], where: dict[str, Any] | None = None) -> dict[str, Any]:
    """`col.get(where=..., include=...)` over the whole collection, a page at a time; returns
    `ids` and each included field as one list."""
    out: dict[str, list[Any]] = {"ids": [], **{key: [] for key in include}}
    offset = 0
    while True:
        page = col.get(where=where, include=include, limit=GET_PAGE, offset=offset)
        out["ids"] += page["ids"]
        for key in include:
            out[key] += page[key] or []
        if len(page["ids"]) < GET_PAGE:
            return out
        offset += GET_PAGE


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


class Gate:
    """Many users at once, or one reopener: `exclusive` waits until the users have left, and new
    users wait for it. Re-entrant for users (a thread already inside enters again at once)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._closing = False
        self._mine = threading.local()

    @contextmanager
    def use(self) -> Iterator[None]:
        """Hold the client in use for the duration of the block."""
        depth = getattr(self._mine, "depth", 0)
        if not depth:
            with self._cond:
                while self._closing:
                    self._cond.wait()
                self._users += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if not depth:
                with self._cond:
                    self._users -= 1
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the client alone (never from inside `use`: that would wait for itself)."""
        if getattr(self._mine, "depth", 0):
            raise RuntimeError("a reopen was asked for while this thread uses the client")
        with self._cond:
            while self._closing:
                self._cond.wait()
            self._closing = True
            while self._users:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closing = False
                self._cond.notify_all()


@dataclass
class _Shared:
    """A client and its bookkeeping, one per embedded path (or server URL) per process."""

    client: Any = None
    gate: Gate = field(default_factory=Gate)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, str] = field(default_factory=dict)  # collection -> version last seen
    reopens: int = 0
    reopen_s: float = 0.0


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _shared(key: str) -> _Shared:
    with _SHARED_LOCK:
        return _SHARED.setdefault(key, _Shared())


class ChromaStore:
    """Lazily opened Chroma client plus the per-tenant collection rules."""

    def __init__(self, path: Path | None = None, url: str | None = None) -> None:
        if (path is None) == (url is None):
            raise ValueError("give exactly one of a Chroma path (embedded) or URL (server)")
        self.path = Path(path) if path is not None else None
        self.url = url
        key = url if url else str(Path(path).resolve())  # type: ignore[arg-type]
        self._shared = _shared(key)

    @property
    def embedded(self) -> bool:
        """Whether this store opens Chroma in-process (a path) rather than a server (a URL)."""
        return self.url is None

    def client(self) -> Any:
        """The Chroma client, created on first use (telemetry off)."""
        shared = self._shared
        with shared.lock:
            if shared.client is None:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                settings = ChromaSettings(anonymized_telemetry=False)
                if self.url:
                    url = urlparse(self.url)
                    shared.client = chromadb.HttpClient(
                        host=url.hostname or "127.0.0.1",
                        port=url.port or (443 if url.scheme == "https" else 8000),
                        ssl=url.scheme == "https",
                        settings=settings,
                    )
                else:
                    assert self.path is not None
                    shared.client = chromadb.PersistentClient(str(self.path), settings=settings)
            return shared.client

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep the client from being reopened during the block (wrap every use of a
        collection object in one: a reopen invalidates them)."""
        with self._shared.gate.use():
            yield

    def changed_elsewhere(self, col: Any) -> bool:
        """Whether another process wrote `col` since this process last saw it (embedded only:
        a server serves every client the same vectors)."""
        if not self.embedded:
            return False
        seen = self._shared.seen.get(col.name)
        return seen is not None and seen != version(col)

    def saw(self, col: Any) -> None:
        """Note `col`'s version as one this process's client reflects."""
        self._shared.seen.setdefault(col.name, version(col))

    def wrote(self, col: Any, new_version: str) -> None:
        """Note a version this process wrote (its own writes are visible to its client)."""
        self._shared.seen[col.name] = new_version

    def reopen(self) -> None:
        """Close the embedded client and open a new one on next use, so that it reads what
        other processes wrote; waits for calls on the old client to finish."""
        if not self.embedded:
            return
        shared = self._shared
        with shared.gate.exclusive():
            started = time.perf_counter()
            with shared.lock:
                client, shared.client = shared.client, None
                shared.seen.clear()
            if client is not None:
                client.close()
            self.client()
            shared.reopens += 1
            shared.reopen_s += time.perf_counter() - started

    @property
    def reopen_stats(self) -> tuple[int, float]:
        """(reopens so far, seconds they took) in this process, for this path."""
        return self._shared.reopens, self._shared.reopen_s

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
            self._shared.seen.pop(collection_name(tenant), None)
            try:
                self.client().delete_collection(collection_name(tenant))
            except Exception as exc:
                if _is_not_found(exc):
                    return False
                raise
        return True

    def bump_version(self, col: Any) -> str:
        """Mark the collection as changed, so every BM25 index built from it goes stale, and
        every other process reopens; returns the new version."""
        # Chroma refuses to change the distance function after creation: pass the rest back.
        kept = {k: v for k, v in (col.metadata or {}).items() if not k.startswith("hnsw:")}
        new = uuid.uuid4().hex
        col.modify(metadata={**kept, VERSION_KEY: new})
        self.wrote(col, new)
        return new
