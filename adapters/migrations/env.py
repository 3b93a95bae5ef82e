"""Alembic environment for the registry. Run through `adapters.registry.migrate(url)`."""

from adapters.db import run_environment
from adapters.models import Base

run_environment(Base.metadata, "alembic_version_adapters")  # other tables share the database
