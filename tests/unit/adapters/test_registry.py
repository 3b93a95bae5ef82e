import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters import store as store_module
from adapters.archive import extract_archive
from adapters.errors import AdapterError, AdapterNotFound, UploadTooLarge


def test_versions_aliases_promote_rollback_remove(registry, make, tmp_path) -> None:
    v1 = registry.register(make(tmp_path / "a1", seed=1), "support", owner="acme")
    assert (v1.version, v1.is_prod, v1.served_name) == (1, True, "support-v1")
    assert (v1.path / "adapter_model.safetensors").is_file()
    v2 = registry.register(make(tmp_path / "a2", seed=2), "support", owner="acme", promote=False)
    assert v2.version == 2 and not v2.is_prod
    assert registry.get("support").version == 1
    assert registry.get("support@2").digest == v2.digest
    assert registry.get("support@prod").version == 1
    registry.promote("support@2")
    assert registry.get("support").version == 2
    back = registry.rollback("support")
    assert back.version == 1 and registry.get("support").version == 1
    with pytest.raises(AdapterError, match="no earlier prod"):
        registry.rollback("support")
    with pytest.raises(AdapterError, match="prod version"):
        registry.remove("support@1")
    assert [v.ref for v in registry.remove("support@2")] == ["support@2"]
    assert not v2.path.exists() and v1.path.exists()
    registry.remove("support")
    assert registry.versions() == [] and not v1.path.exists()


def test_same_bytes_are_recognised(registry, adapter) -> None:
    first = registry.register(adapter, "a", owner="acme")
    again = registry.register(adapter, "a", owner="acme")
    assert again.existing and again.version == first.version and len(registry.versions()) == 1


def test_names_and_unknowns(registry, adapter) -> None:
    for bad in ("Bad", "a b", "../x", "x-v3", ""):
        with pytest.raises(AdapterError, match="invalid|must not"):
            registry.register(adapter, bad)
    with pytest.raises(AdapterNotFound, match="no adapter named"):
        registry.get("nope")
    registry.register(adapter, "a", owner="acme")
    with pytest.raises(AdapterNotFound, match="no version 9"):
        registry.get("a@9")
    with pytest.raises(AdapterError, match="taken"):
        registry.register(adapter, "a", owner="globex")


def test_tenant_visibility(registry, make, tmp_path) -> None:
    registry.register(make(tmp_path / "1", seed=1), "mine", owner="acme")
    registry.register(make(tmp_path / "2", seed=2), "shared", owner="acme", shared_with=["globex"])
    registry.register(make(tmp_path / "3", seed=3), "public", shared_with=["*"])
    assert {v.name for v in registry.list_for_tenant("acme")} == {"mine", "shared", "public"}
    assert {v.name for v in registry.list_for_tenant("globex")} == {"shared", "public"}
    assert registry.resolve_for_tenant("mine", "globex") is None
    assert registry.resolve_for_tenant("mine", "acme").name == "mine"
    assert registry.resolve_for_tenant("nope", "acme") is None
    assert registry.get_served("mine-v1").name == "mine"


def test_a_failure_mid_copy_leaves_nothing(registry, adapter, monkeypatch) -> None:
    calls = {"n": 0}
    real = store_module._copy_file

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            dst.write_bytes(b"partial")
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(store_module, "_copy_file", flaky)
    with pytest.raises(OSError):
        registry.register(adapter, "a", owner="acme")
    root = registry.store.root
    assert list((root / "staging").iterdir()) == [] and list((root / "sha256").iterdir()) == []
    with registry.engine.connect() as conn:
        assert conn.execute(text("select count(*) from adapter_versions")).scalar() == 0
        assert conn.execute(text("select count(*) from adapters")).scalar() == 0


def test_leftovers_of_a_kill_are_collected(registry, adapter, tmp_path, base_dir) -> None:
    from adapters.registry import AdapterRegistry

    staged = registry.store.stage(adapter)  # as if killed after staging
    orphan = registry.store.path_for("f" * 64)
    orphan.mkdir()  # as if killed between the rename and the database commit
    import os

    os.utime(orphan, (0, 0))
    os.utime(staged, (0, 0))
    fresh = registry.store.stage(adapter)  # another process staging right now: left alone
    AdapterRegistry(str(registry.engine.url), registry.store.root, base_model="tiny-base",
                    max_rank=16, base_model_dir=base_dir)  # fmt: skip
    assert not staged.exists() and not orphan.exists() and fresh.exists()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(adapter, mode="w:gz", extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        tf.add(adapter, arcname="my-adapter")
        for info in extra or []:
            tf.addfile(info)
    return buf.getvalue()


def test_archives_unpack_safely(adapter, tmp_path) -> None:
    files = {p.name: p.read_bytes() for p in adapter.iterdir()}
    out = extract_archive(_zip(files), tmp_path, 10 << 20)
    assert (out / "adapter_config.json").is_file()
    out = extract_archive(_tar(adapter), tmp_path, 10 << 20)
    assert out.name == "my-adapter" and (out / "adapter_model.safetensors").is_file()
    for evil in ("../evil.txt", "/etc/evil", "a/../../evil"):
        with pytest.raises(AdapterError, match="unsafe path"):
            extract_archive(_zip({evil: b"x", **files}), tmp_path, 10 << 20)
    link = tarfile.TarInfo("my-adapter/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(AdapterError, match="not a regular file"):
        extract_archive(_tar(adapter, extra=[link]), tmp_path, 10 << 20)
    with pytest.raises(UploadTooLarge):
        extract_archive(_zip({"big": b"0" * (2 << 20)}), tmp_path, 1 << 20)
    with pytest.raises(AdapterError, match="neither a zip nor a tar"):
        extract_archive(b"hello", tmp_path, 1 << 20)
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        extract_archive(_zip({"readme.txt": b"x"}), tmp_path, 1 << 20)
    assert [p for p in tmp_path.iterdir() if p.name.startswith("upload-")].__len__() == 2


def test_archive_limits_members_links_and_bombs(adapter, tmp_path) -> None:
    files = {p.name: p.read_bytes() for p in adapter.iterdir()}
    many = {f"junk/{i}.txt": b"x" for i in range(20)}
    with pytest.raises(AdapterError, match="more than the limit of 16"):
        extract_archive(_zip({**files, **many}), tmp_path, 10 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("adapter_model.safetensors")
        link.external_attr = 0o120777 << 16  # a symlink entry
        zf.writestr(link, "/etc/passwd")
        zf.writestr("adapter_config.json", files["adapter_config.json"])
    with pytest.raises(AdapterError, match="not a regular file"):
        extract_archive(buf.getvalue(), tmp_path, 10 << 20)
    # A gzip bomb: a tiny .tar.gz whose one member unpacks to 64 MiB; refused from its header.
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz") as tf:
        info = tarfile.TarInfo("adapter_model.safetensors")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    assert len(bomb.getvalue()) < 200_000
    with pytest.raises(UploadTooLarge, match="more than the limit"):
        extract_archive(bomb.getvalue(), tmp_path, 1 << 20)
    hard = tarfile.TarInfo("my-adapter/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "my-adapter/adapter_config.json"
    with pytest.raises(AdapterError, match="not a regular file"):
        extract_archive(_tar(adapter, extra=[hard]), tmp_path, 10 << 20)
    # An archive on disk works like bytes (the HTTP upload is spooled to a file).
    on_disk = tmp_path / "upload.tar.gz"
    on_disk.write_bytes(_tar(adapter))
    assert (extract_archive(on_disk, tmp_path, 10 << 20) / "adapter_config.json").is_file()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("upload-")]) == 1


def test_the_stored_copy_is_what_was_validated(registry, adapter, monkeypatch) -> None:
    """Bytes that change after staging cannot slip past validation."""
    real = store_module._copy_file

    def corrupting(src, dst):
        real(src, dst)
        if dst.name == "adapter_model.safetensors":
            dst.write_bytes(dst.read_bytes()[:-10])

    monkeypatch.setattr(store_module, "_copy_file", corrupting)
    with pytest.raises(AdapterError, match="truncated"):
        registry.register(adapter, "a", owner="acme")
    assert list((registry.store.root / "sha256").iterdir()) == []
    assert list((registry.store.root / "staging").iterdir()) == []
    assert registry.versions() == []


def test_version_numbers_are_never_reused(registry, make, tmp_path) -> None:
    """A served name (`NAME-vN`) always means the same weights: vLLM may still hold it."""
    registry.register(make(tmp_path / "a1", seed=1), "x", owner="acme")
    registry.register(make(tmp_path / "a2", seed=2), "x", owner="acme", promote=False)
    registry.remove("x@2")  # the newest version
    v3 = registry.register(make(tmp_path / "a3", seed=3), "x", owner="acme")
    assert v3.served_name == "x-v3"
    registry.remove("x")  # the whole adapter; the name is free again, its numbers are not
    v4 = registry.register(make(tmp_path / "a4", seed=4), "x", owner="globex")
    assert (v4.version, v4.owner, v4.is_prod) == (4, "globex", True)
    assert [v.version for v in registry.versions()] == [4]


def test_numbers_in_use_before_the_counter_existed_are_kept(registry, make, tmp_path, base_dir):
    from alembic import command
    from alembic.config import Config

    from adapters.registry import MIGRATIONS, AdapterRegistry

    for seed in (1, 2):
        registry.register(make(tmp_path / f"a{seed}", seed=seed), "x", promote=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", str(registry.engine.url))
    command.downgrade(cfg, "0001")  # a registry made before version numbers were remembered
    upgraded = AdapterRegistry(str(registry.engine.url), registry.store.root,
                               base_model="tiny-base", max_rank=16, base_model_dir=base_dir)  # fmt: skip
    upgraded.remove("x@2")
    assert upgraded.register(make(tmp_path / "a3", seed=3), "x").version == 3


def test_references_with_non_ascii_digits_are_aliases(registry, adapter) -> None:
    registry.register(adapter, "x", owner="acme")
    for ref in ("x@²", "x@١"):  # str.isdigit() is true for both; int() refuses '²'
        with pytest.raises(AdapterNotFound, match="has no alias"):
            registry.get(ref)
        assert registry.resolve_for_tenant(ref, "acme") is None
    assert registry.get_served("x-v١") is None and registry.get("x@1").version == 1


def test_artifacts_are_deleted_under_the_registry_lock(registry, adapter, monkeypatch) -> None:
    """Else a registration of the same bytes could reuse the directory just before it goes."""
    held = []
    real = registry.store.delete

    def delete(digest):
        held.append(registry._lock.locked())
        real(digest)

    monkeypatch.setattr(registry.store, "delete", delete)
    av = registry.register(adapter, "x")
    registry.remove("x")
    assert held == [True] and not av.path.exists()


def test_stored_paths_are_absolute(tmp_path, base_dir, adapter, monkeypatch) -> None:
    """vLLM is handed the path as lora_path, and its working directory is not ours."""
    from adapters.registry import AdapterRegistry

    monkeypatch.chdir(tmp_path)
    registry = AdapterRegistry("sqlite:///reg.db", Path("data/adapters"),
                               base_model="tiny-base", max_rank=16, base_model_dir=base_dir)  # fmt: skip
    av = registry.register(adapter, "x")
    assert (
        av.path.is_absolute() and av.path == tmp_path / "data" / "adapters" / "sha256" / av.digest
    )
    assert registry.get("x").path.is_absolute()


def test_a_no_go_evaluation_blocks_promotion_unless_forced(registry, make, tmp_path) -> None:
    registry.register(make(tmp_path / "a1", seed=1), "support", owner="acme")
    v2 = registry.register(make(tmp_path / "a2", seed=2), "support", owner="acme", promote=False)
    no_go = {"go": False, "checks": {"task loss improves": False, "no forgetting": True}}
    recorded = registry.record_eval(v2.digest, no_go)
    assert [av.ref for av in recorded] == ["support@2"]
    assert registry.get("support@2").eval_report == no_go
    with pytest.raises(AdapterError, match="NO-GO: task loss improves") as exc:
        registry.promote("support@2")
    assert exc.value.kind == "conflict" and exc.value.code == "gates_failed"
    assert registry.get("support").version == 1
    assert registry.promote("support@2", force=True).version == 2
    assert registry.record_eval("0" * 64, no_go) == []


def test_losing_a_race_with_another_process_is_a_409(registry, make, tmp_path, monkeypatch) -> None:
    registry.register(make(tmp_path / "a1", seed=1), "support", owner="acme")
    # As if another process had taken the next number between our read and our commit.
    monkeypatch.setattr(registry, "_next_number", lambda s, row: 1)
    second = make(tmp_path / "a2", seed=2)
    with pytest.raises(AdapterError, match="another process") as exc:
        registry.register(second, "support", owner="acme")
    assert exc.value.kind == "conflict" and exc.value.code == "concurrent_registration"
    assert [v.ref for v in registry.versions()] == ["support@1"]
    assert len(list((registry.store.root / "sha256").iterdir())) == 1  # nothing half-stored
