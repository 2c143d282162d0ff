"""What a ledger commit survives: the engine factory's SQLite pragmas, PostgreSQL's durability settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import event
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from bridge.app import Daemon
from bridge.config import LedgerSettings, Settings
from bridge.ledger import upgrade_to_head
from bridge.ledger.engine import durability_problems, make_engine


def test_sqlite_connections_sync_every_commit(tmp_path: Path) -> None:
    """A connection from the engine factory runs WAL, synchronous=FULL, foreign keys and a busy timeout."""
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA synchronous").scalar() == 2, "FULL: the WAL is synced at every commit"
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
        assert durability_problems(engine) == []
    finally:
        engine.dispose()


def test_sqlite_below_full_is_reported(tmp_path: Path) -> None:
    """An SQLite ledger whose connections run synchronous=NORMAL is reported as not durable."""
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")

    def weaken(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(engine, "connect", weaken)  # runs after the factory's own listener
    try:
        problems = durability_problems(engine)
        assert len(problems) == 1 and "synchronous is 1" in problems[0]
    finally:
        engine.dispose()


def test_postgresql_without_fsync_or_synchronous_commit_is_reported(pg_database: str) -> None:
    """The test cluster runs fsync=off and synchronous_commit=off: both are named; turning the second on
    for the database leaves only fsync."""
    engine = make_engine(pg_database)
    try:
        problems = durability_problems(engine)
        assert len(problems) == 2
        assert "fsync is off" in problems[0] and "synchronous_commit is off" in problems[1]
        database = make_url(pg_database).database
        conn = psycopg2.connect(pg_database)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = on')
        conn.close()
        engine.dispose()  # new sessions read the database's setting
        assert [p for p in durability_problems(engine) if "synchronous_commit" in p] == []
        assert len(durability_problems(engine)) == 1
    finally:
        engine.dispose()


async def test_the_daemon_warns_at_start_about_a_ledger_that_is_not_durable(pg_database: str) -> None:
    """Opening its ledger, the daemon logs one `ledger.not_durable` warning per problem of the server."""
    upgrade_to_head(pg_database)
    daemon = Daemon(Settings(ledger=LedgerSettings(url=pg_database)))
    with capture_logs() as logs:
        async with daemon._ledger():
            pass
    warnings = [e for e in logs if e["event"] == "ledger.not_durable"]
    assert [e["log_level"] for e in warnings] == ["warning", "warning"]
    assert "fsync is off" in warnings[0]["problem"]
