"""Alembic environment for the ledger: online only, on the connection or URL that migrate.py hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from bridge.ledger.engine import make_engine
from bridge.ledger.tables import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the handed-in connection, else on a fresh engine for the configured URL."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.attributes.get("ledger_url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no ledger URL: use bridge.ledger.migrate or set sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use `mogli-bridge setup`")
run_migrations_online()
