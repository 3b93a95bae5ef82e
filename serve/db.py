"""The gateway's tables (tenants, keys) share the registry's database and engine settings."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from adapters.db import make_engine

__all__ = ["Base", "make_engine"]


class Base(DeclarativeBase):
    """Declarative base for serve's tables."""
