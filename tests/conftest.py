"""Shared fixtures: a private PostgreSQL cluster per test session, fresh databases per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

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
