"""Tenants, their API keys (stored as SHA-256 digests, shown once) and their policy."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import JSON, DateTime, ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from serve.db import Base

KEY_PREFIX = "lpx-"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
Route = Literal["prompt", "rag", "adapter", "combined"]
ALL_ROUTES: tuple[Route, ...] = ("prompt", "rag", "adapter", "combined")


class TenantError(ValueError):
    """A tenant operation the caller must fix."""

    def __init__(self, message: str, status_code: int = 400, code: str = "invalid_tenant") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code


class TenantPolicy(BaseModel):
    """What a tenant may use. Empty `models` means: the base model plus its own/shared adapters."""

    model_config = {"extra": "forbid"}

    models: list[str] = Field(
        default_factory=list, description="Extra model/adapter names allowed; [] = defaults."
    )
    allow_base_model: bool = Field(True, description="May call the base model directly.")
    routes: list[Route] = Field(
        default_factory=lambda: list(ALL_ROUTES),
        description="Routing paths this tenant may take.",
    )
    collections: list[str] = Field(default_factory=list, description="Retrieval collections.")
    rag_min_score: float = Field(0.5, ge=0, le=1, description="Router: retrieval score needed.")
    adapter_min_similarity: float = Field(
        0.45, ge=0, le=1, description="Router: prompt-to-exemplar similarity needed for an adapter."
    )


class TenantRow(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    keys: Mapped[list[ApiKeyRow]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan"
    )


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    tenant_name: Mapped[str] = mapped_column(ForeignKey("tenants.name", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tenant: Mapped[TenantRow] = relationship(back_populates="keys")


@dataclass(frozen=True)
class Tenant:
    """A resolved tenant, as handlers see it."""

    name: str
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    created_at: datetime | None = None
    key_count: int = 0


def new_key() -> str:
    """A fresh API key: prefix plus 32 bytes of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Keys are random and long, so an unsalted SHA-256 is enough (no dictionary to attack)."""
    return hashlib.sha256(key.encode()).hexdigest()


def keys_match(key: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(key), digest)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise TenantError(
            f"tenant name {name!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def _to_tenant(row: TenantRow) -> Tenant:
    return Tenant(row.name, TenantPolicy(**(row.policy or {})), row.created_at, len(row.keys))


class TenantService:
    """Create, list and authenticate tenants."""

    def __init__(self, engine: Any, cache_ttl_s: float = 10.0) -> None:
        self.engine = engine
        self.cache_ttl_s = cache_ttl_s
        # digest -> (tenant, expiry). Changes made through this service clear it at once; other
        # gateway replicas see them within cache_ttl_s.
        self._cache: dict[str, tuple[Tenant, float]] = {}
        Base.metadata.create_all(engine)

    def cached(self, key: str) -> Tenant | None:
        """The tenant for `key` if it was authenticated within the cache TTL."""
        hit = self._cache.get(hash_key(key))
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def _forget(self) -> None:
        self._cache.clear()

    def create(self, name: str, policy: dict[str, Any] | None = None) -> tuple[Tenant, str]:
        """Create a tenant with one key; returns the tenant and the key (shown once)."""
        check_name(name)
        try:
            parsed = TenantPolicy(**(policy or {}))
        except ValidationError as exc:
            raise TenantError(f"invalid policy: {exc.errors()[0]['msg']}") from exc
        key = new_key()
        now = datetime.now(UTC)
        with Session(self.engine) as s:
            if s.get(TenantRow, name) is not None:
                raise TenantError(f"tenant {name!r} already exists", 409, "tenant_exists")
            row = TenantRow(name=name, policy=parsed.model_dump(), created_at=now)
            row.keys.append(ApiKeyRow(digest=hash_key(key), prefix=key[:8], created_at=now))
            s.add(row)
            try:
                s.commit()
            except IntegrityError as exc:
                raise TenantError(f"tenant {name!r} already exists", 409, "tenant_exists") from exc
            return _to_tenant(row), key

    def add_key(self, name: str) -> str:
        key = new_key()
        with Session(self.engine) as s:
            row = s.get(TenantRow, name)
            if row is None:
                raise TenantError(f"no tenant named {name!r}", 404, "tenant_not_found")
            row.keys.append(
                ApiKeyRow(digest=hash_key(key), prefix=key[:8], created_at=datetime.now(UTC))
            )
            s.commit()
        return key

    def set_policy(self, name: str, policy: dict[str, Any]) -> Tenant:
        try:
            parsed = TenantPolicy(**policy)
        except ValidationError as exc:
            raise TenantError(f"invalid policy: {exc.errors()[0]['msg']}") from exc
        with Session(self.engine) as s:
            row = s.get(TenantRow, name)
            if row is None:
                raise TenantError(f"no tenant named {name!r}", 404, "tenant_not_found")
            row.policy = parsed.model_dump()
            s.commit()
            self._forget()
            return _to_tenant(row)

    def get(self, name: str) -> Tenant | None:
        with Session(self.engine) as s:
            row = s.get(TenantRow, name)
            return _to_tenant(row) if row else None

    def list(self) -> list[Tenant]:
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
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (tenant, time.monotonic() + self.cache_ttl_s)
        return tenant

    def delete(self, name: str) -> None:
        with Session(self.engine) as s:
            row = s.get(TenantRow, name)
            if row is None:
                raise TenantError(f"no tenant named {name!r}", 404, "tenant_not_found")
            s.delete(row)
            s.commit()
        self._forget()
