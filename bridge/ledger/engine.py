"""Engine factory for the ledger: SQLite (WAL, synchronous FULL, busy timeout, foreign keys) or PostgreSQL.

Durability. The daemon acknowledges a source LSN only after the ledger commit that recorded it, so a commit
must survive power loss. SQLite in WAL mode with `synchronous=FULL` syncs the WAL at every commit (NORMAL
syncs only at checkpoints: a committed transaction could vanish). PostgreSQL is durable at commit with
`fsync=on` and `synchronous_commit` not `off`; `durability_problems` reports a server set otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

from bridge.errors import ConfigurationError
from bridge.redact import describe

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option for read-only work: on SQLite it starts a deferred transaction instead of taking the
# write lock (ignored elsewhere).
READ_ONLY = "ledger_read_only"
# PRAGMA synchronous values: 2 = FULL, 3 = EXTRA; below FULL a WAL commit is not synced to disk.
SQLITE_SYNCHRONOUS_FULL = 2


def normalise_url(url: str | URL) -> URL:
    """Parse a ledger URL; a bare `postgresql://` or `postgres://` URL gets the psycopg2 driver."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with the raw value; name the key instead
        raise ConfigurationError(f"ledger.url is not a SQLAlchemy URL: {exc}", key="ledger.url") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError("ledger.url must be a sqlite:/// or postgresql:// URL", key="ledger.url")
    return parsed


def unavailable_reason(exc: BaseException) -> str:
    """Why the ledger could not be reached, for LedgerUnavailable and the lines that log it: the driver's
    exception type and the first line of its message (libpq names host and port), passwords masked."""
    return describe(getattr(exc, "orig", None) or exc)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Build an engine for the ledger; creates the SQLite file's directory when needed."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    # values_plus_batch: executemany UPDATEs go out in pages instead of one round trip per row.
    return create_engine(parsed, pool_pre_ping=True, executemany_mode="values_plus_batch", **kwargs)


create_ledger_engine = make_engine


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # The daemon talks to the ledger from one worker thread, the CLI from its main thread.
    connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module (it would not BEGIN before DDL and would
    # defer the write lock); SQLAlchemy's "begin" event issues BEGIN IMMEDIATE instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _begin_immediate(connection: Any) -> None:
    # Writers take the write lock up front: a deferred transaction that reads and then writes can fail
    # with SQLITE_BUSY_SNAPSHOT in WAL mode without waiting for busy_timeout.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def durability_problems(engine: Engine) -> list[str]:
    """Why a commit on this ledger might not survive a crash or power loss (empty when it will)."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        if engine.dialect.name == "sqlite":
            synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
            if int(synchronous or 0) < SQLITE_SYNCHRONOUS_FULL:
                return [f"SQLite PRAGMA synchronous is {synchronous}, below FULL (2)"]
            return []
        fsync = connection.execute(text("SHOW fsync")).scalar()
        commit = connection.execute(text("SHOW synchronous_commit")).scalar()
    problems = []
    if fsync != "on":
        problems.append(f"PostgreSQL fsync is {fsync}: a crash of its host can lose committed data")
    if commit == "off":
        problems.append("PostgreSQL synchronous_commit is off: a server crash can lose the last commits")
    return problems
