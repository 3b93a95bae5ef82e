"""The artifact store: adapter files addressed by the sha256 of their weights.

Layout: `<root>/sha256/<digest>/{adapter_config.json, adapter_model.safetensors}`. Files are
copied into a staging directory inside the root (same filesystem), flushed, then renamed into
place, so a reader never sees a half-written adapter and a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from adapters.validation import CONFIG, WEIGHTS

FILES = (CONFIG, WEIGHTS)


def _copy_file(src: Path, dst: Path) -> None:
    """Copy and fsync one file (a module-level function so tests can make it fail mid-copy)."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """Content-addressed adapter directories under `root`."""

    def __init__(self, root: Path) -> None:
        # Absolute: paths under it are handed to vLLM, whose working directory is not ours.
        self.root = Path(root).resolve()
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "staging").mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: str) -> Path:
        """Where the adapter with weights digest `digest` lives (whether or not it exists)."""
        return self.root / "sha256" / digest

    def has(self, digest: str) -> bool:
        """Whether the adapter with this digest is stored."""
        return (self.path_for(digest) / WEIGHTS).is_file()

    def stage(self, src: Path) -> Path:
        """Copy the adapter files of `src` into a fresh staging dir; remove it on failure."""
        staging = Path(tempfile.mkdtemp(prefix="stage-", dir=self.root / "staging"))
        try:
            for name in FILES:
                _copy_file(src / name, staging / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def commit(self, staging: Path, digest: str) -> Path:
        """Move a staged copy into place under its digest (a no-op if the bytes are there)."""
        final = self.path_for(digest)
        if self.has(digest):
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.replace(staging, final)
            _fsync_dir(final.parent)  # make the rename durable before the row refers to it
        # Young again: `collect_garbage` (another process's) spares it until the row that is
        # about to refer to it is committed, however long staging and validation took, and
        # even when these bytes were an unreferenced leftover a moment ago.
        os.utime(final)
        return final

    def discard(self, staging: Path) -> None:
        """Remove a staged copy (no error if it is gone already)."""
        shutil.rmtree(staging, ignore_errors=True)

    def delete(self, digest: str) -> None:
        """Remove a stored adapter."""
        shutil.rmtree(self.path_for(digest), ignore_errors=True)

    def collect_garbage(self, referenced: set[str], min_age_s: float = 60.0) -> list[str]:
        """Delete stored adapters no registry row references (a kill between the rename and
        the database commit leaves one). Young ones are spared: another process may be about
        to commit its row."""
        removed = []
        now = time.time()
        for path in (self.root / "sha256").iterdir():
            if path.name not in referenced and now - path.stat().st_mtime >= min_age_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def clean_staging(self, min_age_s: float = 3600.0) -> list[str]:
        """Remove what an interrupted registration (kill -9) left in staging; the names removed.
        Recent entries are spared: another process (the gateway, while the CLI starts) may be
        staging now."""
        removed = []
        now = time.time()
        for leftover in (self.root / "staging").iterdir():
            if now - leftover.stat().st_mtime >= min_age_s:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover.name)
        return removed
