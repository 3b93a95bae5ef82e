"""Tenants and their API keys (stored as SHA-256 digests, shown once)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serve.errors import ServiceError
from serve.lru import LRU
from serve.names import check_tenant_name
from serve.tenants.policy import TenantPolicy, parse_policy
from serve.tenants.tables import ApiKeyRow, TenantRow

KEY_PREFIX = "lpx-"


@dataclass(frozen=True)
class Tenant:
    """A resolved tenant, as handlers see it. `id` is what its data belongs to (never reused);
    `name` is how people call it (free again once the tenant is deleted)."""

    name: str
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    created_at: datetime | None = None
    key_count: int = 0
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", self.name)


@dataclass(frozen=True)
class KeyInfo:
    """An API key as it can be shown again: its public id and prefix, never the key."""

    id: str
    prefix: str
    created_at: datetime


def key_id(digest: str) -> str:
    """The public handle of a key (to list and revoke it by): the start of its digest."""
    return digest[:12]


def new_key() -> str:
    """A fresh API key: prefix plus 32 bytes of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Keys are random and long, so an unsalted SHA-256 is enough (no dictionary to attack)."""
    return hashlib.sha256(key.encode()).hexdigest()


def keys_match(key: str, digest: str) -> bool:
    """Constant-time comparison of a key with a stored digest."""
    return hmac.compare_digest(hash_key(key), digest)


def tenant_not_found(name: str) -> ServiceError:
    """The error for a tenant name that does not exist."""
    return ServiceError(
        f"no tenant named {name!r} (`loraplex tenants list`; `loraplex tenants create {name}` "
        "makes it)",
        "tenant_not_found",
        "not_found",
    )


def _to_tenant(row: TenantRow) -> Tenant:
    policy = TenantPolicy(**(row.policy or {}))
    return Tenant(row.name, policy, row.created_at, len(row.keys), row.id)


class TenantService:
    """Create, list, authenticate and delete tenants."""

    def __init__(
        self, engine: Engine, cache_ttl_s: float = 5.0, max_cached_keys: int = 10_000
    ) -> None:
        """`engine`: a migrated database (`serve.database.migrate`); `max_cached_keys`: keys
        whose tenant is kept in memory at most (the least recently used go first)."""
        self.engine = engine
        self.cache_ttl_s = cache_ttl_s
        # digest -> (tenant, expiry). Changes made through this service clear it at once; other
        # gateway replicas see them within cache_ttl_s.
        self._cache: LRU[str, tuple[Tenant, float]] = LRU(max_cached_keys)

    def cached(self, key: str) -> Tenant | None:
        """The tenant for `key` if it was authenticated within the cache TTL."""
        hit = self._cache.get(hash_key(key))
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def create(self, name: str, policy: dict[str, Any] | None = None) -> tuple[Tenant, str]:
        """Create a tenant with one key; returns the tenant and the key (shown once)."""
        check_tenant_name(name)
        parsed = parse_policy(policy)
        key = new_key()
        now = datetime.now(UTC)
        exists = ServiceError(f"tenant {name!r} already exists", "tenant_exists", "conflict")
        with Session(self.engine) as s:
            if s.get(TenantRow, name) is not None:
                raise exists
            row = TenantRow(
                name=name, id=uuid.uuid4().hex, policy=parsed.model_dump(), created_at=now
            )
            row.keys.append(ApiKeyRow(digest=hash_key(key), prefix=key[:8], created_at=now))
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise exists from None
            return _to_tenant(row), key

    def add_key(self, name: str) -> str:
        """A new key for an existing tenant (shown once)."""
        key = new_key()
        with Session(self.engine) as s:
            row = self._row(s, name)
            row.keys.append(
                ApiKeyRow(digest=hash_key(key), prefix=key[:8], created_at=datetime.now(UTC))
            )
            s.commit()
        return key

    def keys(self, name: str) -> list[KeyInfo]:
        """The tenant's keys, oldest first, by public id and prefix."""
        with Session(self.engine) as s:
            row = self._row(s, name)
            found = [KeyInfo(key_id(k.digest), k.prefix, k.created_at) for k in row.keys]
        return sorted(found, key=lambda k: k.created_at)

    def revoke_key(self, name: str, kid: str) -> KeyInfo:
        """Revoke one key by its public id: refused at once here, and by other processes once
        their cache entry expires (`cache_ttl_s`)."""
        with Session(self.engine) as s:
            row = self._row(s, name)
            matches = [k for k in row.keys if key_id(k.digest) == kid]
            if not matches:
                raise ServiceError(
                    f"tenant {name!r} has no key {kid!r} (`loraplex tenants keys list {name}`)",
                    "key_not_found",
                    "not_found",
                )
            gone = matches[0]
            info = KeyInfo(kid, gone.prefix, gone.created_at)
            s.delete(gone)
            s.commit()
        self._cache.clear()
        return info

    def revoke_all_keys(self, name: str) -> int:
        """Revoke every key of the tenant; how many there were."""
        with Session(self.engine) as s:
            row = self._row(s, name)
            count = len(row.keys)
            row.keys.clear()
            s.commit()
        self._cache.clear()
        return count

    def rotate_keys(self, name: str) -> tuple[str, list[KeyInfo]]:
        """A new key (shown once) replacing all the tenant's keys, which are revoked."""
        key = new_key()
        with Session(self.engine) as s:
            row = self._row(s, name)
            old = [KeyInfo(key_id(k.digest), k.prefix, k.created_at) for k in row.keys]
            row.keys.clear()
            row.keys.append(
                ApiKeyRow(digest=hash_key(key), prefix=key[:8], created_at=datetime.now(UTC))
            )
            s.commit()
        self._cache.clear()
        return key, old

    def set_policy(self, name: str, policy: dict[str, Any]) -> Tenant:
        """Replace a tenant's policy."""
        parsed = parse_policy(policy)
        with Session(self.engine) as s:
            row = self._row(s, name)
            row.policy = parsed.model_dump()
            s.commit()
            self._cache.clear()
            return _to_tenant(row)

    def get(self, name: str) -> Tenant | None:
        """The tenant called `name`, or None."""
        with Session(self.engine) as s:
            row = s.get(TenantRow, name)
            return _to_tenant(row) if row else None

    def names(self) -> dict[str, str]:
        """Tenant id -> name, for showing who owns what."""
        with Session(self.engine) as s:
            return dict(s.execute(select(TenantRow.id, TenantRow.name)).tuples().all())

    def require(self, name: str) -> Tenant:
        """The tenant called `name`, or a not_found error that says how to make it."""
        tenant = self.get(name)
        if tenant is None:
            raise tenant_not_found(name)
        return tenant

    def list(self) -> list[Tenant]:
        """Every tenant, by name."""
        with Session(self.engine) as s:
            return [_to_tenant(r) for r in s.scalars(select(TenantRow).order_by(TenantRow.name))]

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant owning `key`, or None. Lookup is by digest, so timing leaks nothing useful."""
        if not key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(key)
        with Session(self.engine) as s:
            row = s.get(ApiKeyRow, digest)
            if row is None:
                return None
            tenant = _to_tenant(row.tenant)
        self._cache[digest] = (tenant, time.monotonic() + self.cache_ttl_s)
        return tenant

    def delete(self, name: str) -> None:
        """Delete the tenant and its keys (its documents are the caller's to drop)."""
        with Session(self.engine) as s:
            s.delete(self._row(s, name))
            s.commit()
        self._cache.clear()

    def _row(self, s: Session, name: str) -> TenantRow:
        row = s.get(TenantRow, name)
        if row is None:
            raise tenant_not_found(name)
        return row
