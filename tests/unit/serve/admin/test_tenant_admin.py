"""Tenants are identities, not reusable names: deleting one leaves nothing for a namesake."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from serve.cli import app as cli_app
from serve.errors import ServiceError
from serve.services import Services
from serve.settings import Settings


@pytest.fixture
def svc(tmp_path, base_dir) -> Services:
    return Services(Settings(data_dir=tmp_path / "s", base_model="tiny-base", model_dir=base_dir))


def test_a_new_tenant_with_a_deleted_ones_name_inherits_nothing(svc, make, tmp_path) -> None:
    svc.tenants.create("acme")
    svc.tenants.create("globex")
    admin = svc.adapters
    asyncio.run(admin.register(make(tmp_path / "a"), "private", owner="acme"))
    asyncio.run(
        admin.register(make(tmp_path / "b", seed=2), "shared", owner="globex", shared_with=["acme"])
    )
    old = svc.tenants.get("acme")
    assert {a.name for a in svc.registry.list_for_tenant(old.id)} == {"private", "shared"}

    with pytest.raises(ServiceError, match="owns adapters \\['private'\\]") as exc:
        asyncio.run(svc.tenant_admin.delete("acme"))
    assert exc.value.kind == "conflict" and svc.tenants.get("acme") is not None
    done = asyncio.run(svc.tenant_admin.delete("acme", delete_adapters=True))
    assert done["adapters_removed"] == ["private"]
    assert [av.name for av in svc.registry.versions()] == ["shared"]
    assert svc.registry.get("shared").shared_with == []  # the old id is gone from sharing lists

    new, _ = svc.tenants.create("acme")
    assert new.id != old.id
    assert svc.registry.list_for_tenant(new.id) == []
    assert svc.router.registry.resolve_for_tenant("shared", new.id) is None


def test_keys_are_listed_revoked_and_rotated(svc) -> None:
    _, first = svc.tenants.create("acme")
    second = svc.tenants.add_key("acme")
    keys = svc.tenants.keys("acme")
    assert len(keys) == 2 and all(len(k.id) == 12 for k in keys)
    assert first not in repr(keys) and second not in repr(keys)
    assert svc.tenants.authenticate(first) is not None  # now cached
    gone = next(k for k in keys if first.startswith(k.prefix))
    svc.tenants.revoke_key("acme", gone.id)
    assert svc.tenants.cached(first) is None and svc.tenants.authenticate(first) is None
    assert svc.tenants.authenticate(second).name == "acme"
    with pytest.raises(ServiceError, match="has no key"):
        svc.tenants.revoke_key("acme", gone.id)
    newest, old = svc.tenants.rotate_keys("acme")
    assert len(old) == 1 and svc.tenants.authenticate(second) is None
    assert svc.tenants.authenticate(newest).name == "acme"


def test_cli_manages_keys_and_deletes_tenants(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LORAPLEX_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LORAPLEX_ADMIN_KEY", raising=False)
    run = CliRunner().invoke
    key = run(cli_app, ["tenants", "create", "acme"]).stdout.strip()
    listed = run(cli_app, ["tenants", "keys", "list", "acme"])
    assert listed.exit_code == 0 and key[:8] in listed.output
    rotated = run(cli_app, ["tenants", "keys", "rotate", "acme"])
    assert rotated.exit_code == 0 and rotated.stdout.strip() != key
    kid = Services(Settings(data_dir=tmp_path / "state")).tenants.keys("acme")[0].id
    assert run(cli_app, ["tenants", "keys", "revoke", "acme", kid]).exit_code == 0
    out = run(cli_app, ["tenants", "keys", "revoke", "acme", kid])
    assert out.exit_code == 2 and "has no key" in out.output
    assert run(cli_app, ["tenants", "delete", "acme"]).exit_code == 0
    out = run(cli_app, ["tenants", "delete", "acme"])
    assert out.exit_code == 2 and "no tenant named 'acme'" in out.output
