"""Exact and near-duplicate detection with MinHash LSH (datasketch)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasketch import MinHash

WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> set[str]:
    """Lower-cased word n-grams of `text` (the whole text when it is shorter than n words)."""
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def minhash(text: str, num_perm: int = 128) -> MinHash:
    """MinHash signature of the word 3-gram shingles (fixed seed: reproducible clusters)."""
    # Imported here: datasketch pulls in SciPy (0.4 s), which every `loraplex` command,
    # `loraplex up` included, would otherwise pay for at start because the CLI imports this.
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    for s in shingles(text):
        m.update(s.encode())
    return m


def clusters(texts: list[str], threshold: float = 0.8, num_perm: int = 128) -> list[int]:
    """A cluster id per text: texts whose estimated Jaccard similarity of word 3-grams reaches
    `threshold` share an id (transitively), so splits can keep each cluster on one side."""
    parent = list(range(len(texts)))
    if threshold >= 1.0:  # near-duplicate detection off (exact duplicates are removed earlier)
        return parent

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = [minhash(t, num_perm) for t in texts]
    for i, m in enumerate(hashes):
        for other in lsh.query(m):
            j = int(other)
            if hashes[j].jaccard(m) >= threshold:
                parent[root(i)] = root(j)
        lsh.insert(str(i), m)
    return [root(i) for i in range(len(texts))]


def normalised(text: str) -> str:
    """Lower-cased words joined by single spaces: equal for texts differing only in case,
    punctuation or spacing (the exact-match key of decontamination)."""
    return " ".join(WORD.findall(text.lower()))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of `text`, for decontamination against eval sets."""
    words = WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
