"""What a registration killed part-way leaves is collected, and nothing a version needs."""

from __future__ import annotations

import os
import time

from serve.admin.adapters import AdapterAdmin


def _age(path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_gc_removes_old_leftovers_and_spares_young_ones(registry, adapter, make, tmp_path) -> None:
    av = registry.register(adapter, "kept")
    # A registration killed after its rename (stored, no row) and one killed while staging.
    orphan = registry.store.commit(registry.store.stage(make(tmp_path / "b", seed=9)), "f" * 64)
    staged = registry.store.stage(adapter)
    assert registry.collect_garbage() == {"staging": [], "unreferenced": []}  # both too young
    _age(orphan, 120)
    _age(staged, 7200)
    removed = registry.collect_garbage()
    assert removed == {"staging": [staged.name], "unreferenced": ["f" * 64]}
    assert registry.store.has(av.digest) and not orphan.exists() and not staged.exists()


def test_stored_bytes_are_young_again_when_a_registration_adopts_them(registry, adapter) -> None:
    """The same bytes registered again reuse stored files a killed registration left; they must
    not look old to a collector in another process until the row refers to them."""
    first = registry.store.commit(registry.store.stage(adapter), "a" * 64)
    _age(first, 3600)
    again = registry.store.commit(registry.store.stage(adapter), "a" * 64)
    assert again == first and time.time() - again.stat().st_mtime < 60
    assert registry.store.collect_garbage(set(), min_age_s=60) == []


def test_the_admin_collects_uploads_too_and_counts_what_opening_collected(
    registry, tmp_path
) -> None:
    uploads = tmp_path / "uploads"
    (uploads / "upload-x1").mkdir(parents=True)
    (uploads / "archive-y2").write_bytes(b"zip")
    (uploads / "unrelated.txt").write_text("not ours")
    registry.collected = {"staging": ["stage-old"], "unreferenced": []}
    admin = AdapterAdmin(registry, tenants=None, uploads_dir=uploads)  # type: ignore[arg-type]
    first = admin.collect_garbage()
    assert first["uploads"] == []  # young: an upload may be in progress
    assert first["staging"] == ["stage-old"]  # what opening the registry removed is reported
    removed = admin.collect_garbage(min_age_s=0)
    assert sorted(removed["uploads"]) == ["archive-y2", "upload-x1"]
    assert removed["staging"] == [] and (uploads / "unrelated.txt").exists()
