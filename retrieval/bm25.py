"""The lexical leg: a BM25 index (bm25s) per tenant, persisted beside the Chroma collection.

bm25s indexes a whole corpus at once, so the index is rebuilt from the collection after every
write. Chroma is the source of truth: the index records the collection version it was built
from, and a stale or damaged index is rebuilt rather than trusted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import bm25s
import numpy as np


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased word tokens without English stopwords (bm25s's tokenizer)."""
    tokens: list[list[str]] = bm25s.tokenize(
        texts, stopwords="en", return_ids=False, show_progress=False
    )
    return tokens


@dataclass
class LexicalIndex:
    """A loaded index: the bm25s model plus the chunk ids and metadata it covers."""

    version: str
    ids: list[str]
    metadatas: list[dict[str, Any]]
    model: Any
    texts: list[str]

    @cached_property
    def positions(self) -> dict[str, int]:
        """Chunk id -> row in the index."""
        return {cid: i for i, cid in enumerate(self.ids)}

    def record(self, chunk: str) -> tuple[str, dict[str, Any]] | None:
        """(text, metadata) of a chunk this index holds, without asking Chroma."""
        i = self.positions.get(chunk)
        return None if i is None else (self.texts[i], self.metadatas[i])

    def search(
        self,
        query: str,
        n: int,
        where: dict[str, Any] | None = None,
        include: Collection[str] = (),
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score), best first: the `n` best positive scores, plus the positive
        scores of the chunks in `include` (the dense leg's candidates, so fusion sees both
        scores for them); `where` is an equality filter on metadata."""
        if not self.ids:
            return []
        vocab = self.model.vocab_dict
        known = [t for t in tokenize([query])[0] if t in vocab]
        if not known:
            return []
        scores = self.model.get_scores(known)  # one pass over the whole index; cheap at 10^5

        def keep(i: int) -> bool:
            meta = self.metadatas[i]
            return not where or all(meta.get(key) == value for key, value in where.items())

        out: list[tuple[str, float]] = []
        for i in np.argsort(-scores, kind="stable"):
            if len(out) >= n or scores[i] <= 0:
                break
            if keep(int(i)):
                out.append((self.ids[int(i)], float(scores[i])))
        seen = {cid for cid, _ in out}
        for cid in include:
            j = self.positions.get(cid)
            if j is not None and cid not in seen and scores[j] > 0 and keep(j):
                out.append((cid, float(scores[j])))
        out.sort(key=lambda item: -item[1])
        return out


def build(
    ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], version: str
) -> LexicalIndex:
    """An index over the given chunks, tagged with the collection `version` they came from."""
    model = bm25s.BM25()
    if texts:
        model.index(tokenize(texts), show_progress=False)
    return LexicalIndex(version, ids, metadatas, model, texts)


def save(index: LexicalIndex, directory: Path) -> None:
    """Write to a temp dir and swap it in, so a reader never sees half an index."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bm25-", dir=directory.parent))
    try:
        if index.ids:
            index.model.save(str(tmp / "model"))
        (tmp / "meta.json").write_text(
            json.dumps(
                {
                    "version": index.version,
                    "ids": index.ids,
                    "metadatas": index.metadatas,
                    "texts": index.texts,
                }
            )  # fmt: skip
        )
        old = directory.with_name(directory.name + ".old")
        # A crash between the renames below leaves an .old behind; renaming onto it would then
        # fail on every later save.
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(directory: Path) -> LexicalIndex | None:
    """The saved index, or None if missing or unreadable (the caller rebuilds)."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        model = bm25s.BM25.load(str(directory / "model")) if meta["ids"] else bm25s.BM25()
        return LexicalIndex(meta["version"], meta["ids"], meta["metadatas"], model, meta["texts"])
    except (OSError, ValueError, KeyError):
        return None
