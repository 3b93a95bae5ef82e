import pytest

from serve.db import make_engine
from serve.tenants import TenantError, TenantService, hash_key, keys_match, new_key


@pytest.fixture
def svc(tmp_path) -> TenantService:
    return TenantService(make_engine(f"sqlite:///{tmp_path / 't.db'}"))


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
    with pytest.raises(TenantError) as exc:
        svc.create("acme")
    assert exc.value.status_code == 409
    for bad in ("", "Acme", "a b", "-x", "x" * 70):
        with pytest.raises(TenantError, match="invalid"):
            svc.create(bad)


def test_bad_policy_is_refused(svc) -> None:
    with pytest.raises(TenantError, match="invalid policy"):
        svc.create("acme", {"routes": ["teleport"]})
    with pytest.raises(TenantError, match="invalid policy"):
        svc.create("acme", {"unknown_field": 1})


def test_more_keys_policy_update_and_delete(svc) -> None:
    _, first = svc.create("acme")
    second = svc.add_key("acme")
    assert svc.authenticate(second).name == "acme" and svc.get("acme").key_count == 2
    assert svc.set_policy("acme", {"allow_base_model": False}).policy.allow_base_model is False
    svc.delete("acme")
    assert svc.authenticate(first) is None and svc.list() == []
    with pytest.raises(TenantError) as exc:
        svc.delete("acme")
    assert exc.value.status_code == 404


def test_authentication_is_cached_and_changes_clear_the_cache(svc) -> None:
    _, key = svc.create("acme")
    assert svc.cached(key) is None
    assert svc.authenticate(key).name == "acme"
    assert svc.cached(key).name == "acme"
    svc.set_policy("acme", {"routes": ["prompt"]})
    assert svc.cached(key) is None and svc.authenticate(key).policy.routes == ["prompt"]
    svc.delete("acme")
    assert svc.cached(key) is None and svc.authenticate(key) is None
