"""SQLAlchemy engines for loraplex's databases (the registry's and the gateway's tables share one).

SQLite by default, any SQLAlchemy URL otherwise (PostgreSQL in production).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event


def make_engine(url: str, busy_timeout_s: float = 30.0) -> Engine:
    """Create an engine; for SQLite make the file's directory, enable WAL and foreign keys.

    `busy_timeout_s`: how long a statement waits for a lock another process holds (SQLite), or
    for a connection (PostgreSQL), before it fails.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL: the gateway, the CLI and vLLM's resolver plugin read while another writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect = {"connect_timeout": max(1, int(busy_timeout_s))} if url.startswith("postgres") else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect)


def upgrade(script_location: Path, database_url: str) -> None:
    """Bring the tables of one alembic environment (`script_location`) to its newest revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def run_environment(metadata: MetaData, version_table: str) -> None:
    """The body of an alembic `env.py`: migrate on the configured URL, online only.

    Each component (the registry, the gateway's tables) keeps its own version table, so their
    histories stay independent in one database.
    """
    from alembic import context

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    engine = create_engine(str(context.config.get_main_option("sqlalchemy.url")))
    with engine.begin() as conn:
        migrate(conn)
    engine.dispose()
