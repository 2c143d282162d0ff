"""Shared fixtures: a private PostgreSQL cluster per test session, fresh databases per test."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import bridge.logs
from bridge.devtools.localpg import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = ROOT / "bridge" / "schema" / "scheduler_schema.sql"  # the one the wheel ships
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalPostgres]:
    """One throwaway cluster (wal_level=logical) for the whole test session."""
    pg = LocalPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def pg_database(pg_cluster: LocalPostgres) -> str:
    """A fresh, empty database in the session cluster; returns its DSN."""
    return pg_cluster.create_database(f"t{next(_counter)}")


@pytest.fixture
def scheduler_dsn(pg_database: str) -> str:
    """A fresh database holding the reference scheduler schema; returns its DSN."""
    import psycopg2

    conn = psycopg2.connect(pg_database)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA_SQL.read_text())
        conn.commit()
    finally:
        conn.close()
    return pg_database


@pytest.fixture(autouse=True)
def _logging_as_found(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A command run in-process configures logging for the whole process: here without caching loggers (a
    cached module logger would escape `capture_logs` and write to stderr in every later test), and the
    defaults come back after each test."""
    monkeypatch.setattr(
        bridge.logs, "configure_logging", functools.partial(bridge.logs.configure_logging, cache=False)
    )
    yield
    structlog.reset_defaults()
