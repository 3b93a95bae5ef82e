"""Alembic environment for serve's tables (tenants, keys). Run through `serve.database.migrate`."""

from adapters.db import run_environment
from serve.tenants.tables import Base

run_environment(Base.metadata, "alembic_version_serve")  # the registry keeps its own
