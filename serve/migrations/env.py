"""Alembic environment for serve's tables (tenants, keys, router versions, completions, feedback,
drift). Run through `serve.database.migrate`."""

import serve.feedback.tables  # noqa: F401  (registers the tables of the production loop)
import serve.monitor.tables  # noqa: F401
import serve.routing.versions  # noqa: F401  (registers the router's tables on Base.metadata)
from adapters.db import run_environment
from serve.tenants.tables import Base

run_environment(Base.metadata, "alembic_version_serve")  # the registry keeps its own
