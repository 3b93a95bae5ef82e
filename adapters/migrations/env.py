"""Alembic environment for the registry. Run through `adapters.registry.migrate(url)`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from adapters.models import Base

VERSION_TABLE = "alembic_version_adapters"  # other tables share the database


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        engine = create_engine(str(context.config.get_main_option("sqlalchemy.url")))
        with engine.begin() as conn:
            _migrate(conn)
        engine.dispose()
    else:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
