"""The lexical leg: a BM25 index per tenant, updated in place and persisted beside Chroma.

Scoring is bm25s's default, the Lucene variant, with k1 = 1.5 and b = 0.75:
idf = ln(1 + (N - df + 0.5) / (df + 0.5)) and term weight tf / (tf + k1 (1 - b + b len / avglen)),
over bm25s's tokens (lower-cased words of two or more characters, English stopwords removed).
A chunk is indexed with its heading path above its text, as it is embedded.

Why not bm25s itself: bm25s precomputes every term-document score when it indexes a corpus, so
adding one chunk meant rebuilding the index from a full scan of the collection (a write cost
grew with the collection). This index keeps raw term frequencies in per-term postings lists
(`array` buffers, appended in place) and applies idf and length normalisation at query time, in
one numpy pass over the postings of the query's terms: a write costs what it adds, and a query
costs the length of its terms' postings. Deleted chunks are masked and swept out once they are
a quarter of the rows. `tests/unit/retrieval/test_bm25.py` checks scores against bm25s and
against a rebuild from scratch.

Chroma is the source of truth: the index records the collection version it reflects, and a
reader whose version is behind catches up by diffing chunk ids with the collection (`catch_up`):
chunk ids are content-addressed, so an id it already holds has the text it holds.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import threading
from array import array
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np

# bm25s's English stopwords and token pattern, so scores match the library this replaced.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
K1 = 1.5
B = 0.75
FORMAT = 2
# Deleted rows are swept out when they are this share of all rows (and at least SWEEP_MIN).
SWEEP_SHARE = 0.25
SWEEP_MIN = 1000
FETCH_BATCH = 1000


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of two or more characters, without English stopwords."""
    return [t for t in TOKEN_RE.findall(text.lower()) if t not in STOPWORDS]


def lexical_text(text: str, metadata: dict[str, Any] | None) -> str:
    """What is indexed for a chunk: its heading path (it often names the subject) and text."""
    heading = str((metadata or {}).get("heading") or "")
    return f"{heading}\n{text}" if heading else text


class LexicalIndex:
    """BM25 over a tenant's chunks, with their text and metadata; safe to share between threads.

    `version` is the collection version the index reflects (see `store.version`).
    """

    def __init__(self, version: str = "") -> None:
        self.version = version
        self.changes = 0  # rows added or removed since the index was last saved or loaded
        self._ids: list[str | None] = []
        self._rows: dict[str, int] = {}
        self._texts: list[str | None] = []
        self._metas: list[dict[str, Any] | None] = []
        self._lengths = array("f")
        self._alive = bytearray()
        self._total = 0.0  # summed length of live rows
        self._vocab: dict[str, int] = {}
        self._post_rows: list[array[int]] = []
        self._post_tf: list[array[float]] = []
        self._lock = threading.RLock()

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, chunk: object) -> bool:
        return chunk in self._rows

    @property
    def ids(self) -> list[str]:
        """The chunk ids held, in insertion order."""
        with self._lock:
            return list(self._rows)

    def record(self, chunk: str) -> tuple[str, dict[str, Any]] | None:
        """(text, metadata) of a chunk this index holds, without asking Chroma."""
        with self._lock:
            i = self._rows.get(chunk)
            if i is None:
                return None
            return str(self._texts[i]), dict(self._metas[i] or {})

    def document_frequency(self, term: str) -> int:
        """How many live chunks hold `term` (a token as `tokenize` makes it)."""
        with self._lock:
            i = self._vocab.get(term)
            if i is None:
                return 0
            rows = np.frombuffer(self._post_rows[i], dtype=np.int32)
            return int(np.frombuffer(self._alive, dtype=np.uint8)[rows].sum())

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
        with self._lock:
            scores = self._scores(tokenize(query))
            if scores is None:
                return []

            def keep(i: int) -> bool:
                meta = self._metas[i] or {}
                return not where or all(meta.get(key) == value for key, value in where.items())

            out: list[tuple[str, float]] = []
            for i in _best_first(scores, n if not where else len(scores)):
                if len(out) >= n:
                    break
                if keep(i):
                    out.append((str(self._ids[i]), float(scores[i])))
            seen = {cid for cid, _ in out}
            for cid in include:
                j = self._rows.get(cid)
                if j is not None and cid not in seen and scores[j] > 0 and keep(j):
                    out.append((cid, float(scores[j])))
        out.sort(key=lambda item: -item[1])
        return out

    def _scores(self, tokens: list[str]) -> np.ndarray | None:
        counts = Counter(self._vocab[t] for t in tokens if t in self._vocab)
        if not counts or not self._rows:
            return None
        n_docs = len(self._rows)
        avg = self._total / n_docs or 1.0
        # Views over the buffers: the lock keeps writers from resizing them meanwhile.
        alive = np.frombuffer(self._alive, dtype=np.uint8)
        lengths = np.frombuffer(self._lengths, dtype=np.float32)
        rows_out, weights_out = [], []
        for term, times in counts.items():
            rows = np.frombuffer(self._post_rows[term], dtype=np.int32)
            tf = np.frombuffer(self._post_tf[term], dtype=np.float32)
            live = alive[rows].astype(bool)
            rows, tf = rows[live], tf[live].astype(np.float64)
            if not len(rows):
                continue
            df = len(rows)
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            norm = K1 * (1 - B + B * lengths[rows].astype(np.float64) / avg)
            rows_out.append(rows)
            weights_out.append(times * idf * tf / (tf + norm))
        if not rows_out:
            return None
        return np.bincount(
            np.concatenate(rows_out), np.concatenate(weights_out), minlength=len(self._ids)
        )

    # -- writing ------------------------------------------------------------------------------
    def add(
        self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]] | None = None
    ) -> None:
        """Index chunks; an id already held is replaced."""
        metas = metadatas if metadatas is not None else [{} for _ in ids]
        with self._lock:
            self.remove([cid for cid in ids if cid in self._rows])
            for cid, text, meta in zip(ids, texts, metas, strict=True):
                row = len(self._ids)
                tokens = tokenize(lexical_text(text, meta))
                for token, tf in Counter(tokens).items():
                    term = self._vocab.get(token)
                    if term is None:
                        term = self._vocab[token] = len(self._post_rows)
                        self._post_rows.append(array("i"))
                        self._post_tf.append(array("f"))
                    self._post_rows[term].append(row)
                    self._post_tf[term].append(tf)
                self._ids.append(cid)
                self._rows[cid] = row
                self._texts.append(text)
                self._metas.append(dict(meta))
                self._lengths.append(len(tokens))
                self._alive.append(1)
                self._total += len(tokens)
            self.changes += len(ids)

    def remove(self, ids: Iterable[str]) -> int:
        """Drop chunks (ids not held are ignored); returns how many were dropped."""
        dropped = 0
        with self._lock:
            for cid in ids:
                row = self._rows.pop(cid, None)
                if row is None:
                    continue
                self._alive[row] = 0
                self._total -= self._lengths[row]
                self._texts[row] = None
                self._metas[row] = None
                dropped += 1
            self.changes += dropped
            dead = len(self._ids) - len(self._rows)
            if dead >= max(SWEEP_MIN, SWEEP_SHARE * len(self._ids)):
                self._sweep()
        return dropped

    def update_metadata(self, changes: dict[str, dict[str, Any]]) -> None:
        """Merge metadata fields into held chunks (as Chroma's `update` does)."""
        with self._lock:
            for cid, fields in changes.items():
                row = self._rows.get(cid)
                if row is not None and self._metas[row] is not None:
                    self._metas[row] = {**(self._metas[row] or {}), **fields}

    def _sweep(self) -> None:
        """Renumber live rows from 0 and drop the postings of deleted ones."""
        alive = np.frombuffer(self._alive, dtype=np.uint8).astype(bool)
        new_row = np.cumsum(alive, dtype=np.int64) - 1
        keep = np.flatnonzero(alive)
        vocab: dict[str, int] = {}
        post_rows: list[array[int]] = []
        post_tf: list[array[float]] = []
        for token, term in self._vocab.items():
            rows = np.frombuffer(self._post_rows[term], dtype=np.int32)
            live = alive[rows]
            if not live.any():
                continue
            vocab[token] = len(post_rows)
            post_rows.append(array("i", new_row[rows[live]].astype(np.int32).tobytes()))
            post_tf.append(array("f", np.frombuffer(self._post_tf[term], np.float32)[live]))
        lengths = np.frombuffer(self._lengths, dtype=np.float32)[keep]
        self._ids = [self._ids[i] for i in keep]
        self._texts = [self._texts[i] for i in keep]
        self._metas = [self._metas[i] for i in keep]
        self._rows = {str(cid): i for i, cid in enumerate(self._ids)}
        self._lengths = array("f", lengths.tobytes())
        self._alive = bytearray(b"\x01" * len(keep))
        self._total = float(lengths.astype(np.float64).sum())
        self._vocab, self._post_rows, self._post_tf = vocab, post_rows, post_tf

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write to a temp dir and swap it in, so a reader never sees half an index."""
        with self._lock:
            self._sweep()
            terms = list(self._vocab)
            sizes = [len(self._post_rows[self._vocab[t]]) for t in terms]
            pointers = np.zeros(len(terms) + 1, dtype=np.int64)
            pointers[1:] = np.cumsum(sizes)
            rows = np.frombuffer(
                b"".join(self._post_rows[self._vocab[t]].tobytes() for t in terms), np.int32
            )
            tfs = np.frombuffer(
                b"".join(self._post_tf[self._vocab[t]].tobytes() for t in terms), np.float32
            )
            meta = {
                "format": FORMAT,
                "version": self.version,
                "ids": self._ids,
                "texts": self._texts,
                "metadatas": self._metas,
                "terms": terms,
            }
            lengths = np.frombuffer(self._lengths, dtype=np.float32).copy()
            self.changes = 0
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".bm25-", dir=directory.parent))
        try:
            np.savez(tmp / "postings.npz", pointers=pointers, rows=rows, tf=tfs, lengths=lengths)
            (tmp / "meta.json").write_text(json.dumps(meta))
            old = directory.with_name(directory.name + ".old")
            # A crash between the renames below leaves an .old behind; renaming onto it would
            # then fail on every later save.
            shutil.rmtree(old, ignore_errors=True)
            if directory.exists():
                directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def load(directory: Path) -> LexicalIndex | None:
    """The saved index, or None if missing, unreadable or of an older layout (rebuild it)."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            return None
        with np.load(directory / "postings.npz") as arrays:
            pointers, rows, tfs = arrays["pointers"], arrays["rows"], arrays["tf"]
            lengths = arrays["lengths"]
        index = LexicalIndex(str(meta["version"]))
        index._ids = list(meta["ids"])
        index._rows = {str(cid): i for i, cid in enumerate(index._ids)}
        index._texts = list(meta["texts"])
        index._metas = list(meta["metadatas"])
        index._lengths = array("f", lengths.astype(np.float32).tobytes())
        index._alive = bytearray(b"\x01" * len(index._ids))
        index._total = float(lengths.astype(np.float64).sum())
        index._vocab = {t: i for i, t in enumerate(meta["terms"])}
        for i in range(len(meta["terms"])):
            lo, hi = int(pointers[i]), int(pointers[i + 1])
            index._post_rows.append(array("i", rows[lo:hi].astype(np.int32).tobytes()))
            index._post_tf.append(array("f", tfs[lo:hi].astype(np.float32).tobytes()))
        if len(lengths) != len(index._ids) or len(index._texts) != len(index._ids):
            return None
        return index
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def build(
    ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], version: str
) -> LexicalIndex:
    """An index over the given chunks, tagged with the collection `version` they came from."""
    index = LexicalIndex(version)
    index.add(ids, texts, metadatas)
    return index


def catch_up(index: LexicalIndex, col: Any, version: str) -> tuple[int, int]:
    """Bring `index` to what `col` holds now by diffing chunk ids: fetch the chunks it lacks,
    drop the ones the collection no longer has; returns (added, removed)."""
    current = col.get(include=[])["ids"]
    held = set(index.ids)
    now = set(current)
    removed = index.remove([cid for cid in held if cid not in now])
    missing = [cid for cid in current if cid not in held]
    added = 0
    for start in range(0, len(missing), FETCH_BATCH):
        got = col.get(ids=missing[start : start + FETCH_BATCH], include=["documents", "metadatas"])
        docs, metas = got["documents"] or [], got["metadatas"] or []
        rows = [(c, d, dict(m or {})) for c, d, m in zip(got["ids"], docs, metas, strict=False)]
        index.add([r[0] for r in rows], [r[1] or "" for r in rows], [r[2] for r in rows])
        added += len(rows)
    index.version = version
    return added, removed


def _best_first(scores: np.ndarray, n: int) -> list[int]:
    """Rows with a positive score, best first (ties by row), at least the `n` best."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > n > 0:
        # Partition to the n-th best, then keep everything scoring at least that (ties too).
        cut = np.partition(scores[candidates], len(candidates) - n)[len(candidates) - n]
        candidates = candidates[scores[candidates] >= cut]
    order = np.lexsort((candidates, -scores[candidates]))
    return [int(i) for i in candidates[order]]


def save(index: LexicalIndex, directory: Path) -> None:
    """Write `index` to `directory` (see `LexicalIndex.save`)."""
    index.save(directory)
