import pytest

from serve.database import make_engine, migrate
from serve.errors import ServiceError
from serve.tenants import TenantService, hash_key, new_key
from serve.tenants.service import keys_match


@pytest.fixture
def svc(tmp_path) -> TenantService:
    url = f"sqlite:///{tmp_path / 't.db'}"
    migrate(url)
    return TenantService(make_engine(url))


def test_keys_are_random_and_hashed() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("lpx-") and len(a) > 40
    assert hash_key(a) != a and len(hash_key(a)) == 64
    assert keys_match(a, hash_key(a)) and not keys_match(b, hash_key(a))


def test_create_authenticate_and_store_only_digests(svc, tmp_path) -> None:
    tenant, key = svc.create("acme", {"routes": ["prompt", "rag"]})
    assert tenant.name == "acme" and tenant.policy.routes == ["prompt", "rag"]
    assert svc.authenticate(key).name == "acme"
    assert svc.authenticate(key + "x") is None and svc.authenticate("nope") is None
    assert key.encode() not in (tmp_path / "t.db").read_bytes()


def test_duplicate_and_invalid_names(svc) -> None:
    svc.create("acme")
    with pytest.raises(ServiceError) as exc:
        svc.create("acme")
    assert exc.value.kind == "conflict"
    for bad in ("", "Acme", "a b", "-x", "x" * 70):
        with pytest.raises(ServiceError, match="invalid"):
            svc.create(bad)


def test_bad_policy_is_refused(svc) -> None:
    with pytest.raises(ServiceError, match="invalid policy"):
        svc.create("acme", {"routes": ["teleport"]})
    with pytest.raises(ServiceError, match="invalid policy"):
        svc.create("acme", {"unknown_field": 1})


def test_more_keys_policy_update_and_delete(svc) -> None:
    _, first = svc.create("acme")
    second = svc.add_key("acme")
    assert svc.authenticate(second).name == "acme" and svc.get("acme").key_count == 2
    assert svc.set_policy("acme", {"allow_base_model": False}).policy.allow_base_model is False
    svc.delete("acme")
    assert svc.authenticate(first) is None and svc.list() == []
    with pytest.raises(ServiceError) as exc:
        svc.delete("acme")
    assert exc.value.kind == "not_found"


def test_authentication_is_cached_and_changes_clear_the_cache(svc) -> None:
    _, key = svc.create("acme")
    assert svc.cached(key) is None
    assert svc.authenticate(key).name == "acme"
    assert svc.cached(key).name == "acme"
    svc.set_policy("acme", {"routes": ["prompt"]})
    assert svc.cached(key) is None and svc.authenticate(key).policy.routes == ["prompt"]
    svc.delete("acme")
    assert svc.cached(key) is None and svc.authenticate(key) is None


def test_tables_made_before_migrations_are_adopted(tmp_path) -> None:
    """A database from a release that made the tenants' tables with create_all, and stored
    policies with a field since removed, migrates in place and keeps its tenants."""
    import sqlite3

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(
        """
        CREATE TABLE tenants (name VARCHAR(64) PRIMARY KEY, policy JSON, created_at DATETIME);
        CREATE TABLE api_keys (digest VARCHAR(64) PRIMARY KEY, prefix VARCHAR(16),
            tenant_name VARCHAR(64) REFERENCES tenants(name) ON DELETE CASCADE,
            created_at DATETIME);
        INSERT INTO tenants VALUES ('old', '{"collections": [], "routes": ["prompt"]}',
                                    '2026-11-01 00:00:00');
        """
    )
    con.close()
    migrate(f"sqlite:///{db}")
    migrate(f"sqlite:///{db}")  # idempotent
    tenants = TenantService(make_engine(f"sqlite:///{db}"))
    assert tenants.get("old").policy.routes == ["prompt"]
    _, key = tenants.create("new")
    assert tenants.authenticate(key).name == "new"
