"""The one database loraplex keeps (SQLite by default, PostgreSQL by URL): engine and schema.

The registry (`adapters`) and the gateway's own tables (tenants, keys) each keep an alembic
history with its own version table; `migrate` brings both up to date at start, under a lock, so
that two processes starting together (two gateways, or the CLI beside a gateway) never race.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from adapters.db import make_engine, upgrade
from adapters.registry import migrate as migrate_registry

__all__ = ["make_engine", "migrate"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: PostgreSQL's advisory locks are keyed by a 64-bit integer.
LOCK_KEY = 0x6C6F7261706C6578


def migrate(database_url: str, engine: Engine | None = None) -> None:
    """Bring every loraplex table to the newest schema (idempotent, safe to run concurrently)."""
    engine = engine or make_engine(database_url)  # also makes a SQLite file's directory
    with _migration_lock(database_url, engine):
        migrate_registry(database_url)
        upgrade(MIGRATIONS, database_url)


@contextmanager
def _migration_lock(database_url: str, engine: Engine) -> Iterator[None]:
    if database_url.startswith("postgresql"):
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        return
    if database_url.startswith("sqlite:///"):
        lock_path = Path(database_url.removeprefix("sqlite:///") + ".migrate.lock")
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    yield  # other databases: alembic's own transaction is all there is
