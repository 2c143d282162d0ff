"""Ledger fixtures: every test runs on SQLite (a temporary file) and on PostgreSQL (a fresh database)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devtools.localpg import available_bindirs
from bridge.ledger import upgrade_to_head
from bridge.ledger.repository import Ledger
from tests.adapters.ledger.factory import NOW


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger database URL on each backend (the PostgreSQL cluster starts only when needed)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/var/ledger.sqlite3"
    dsn: str = request.getfixturevalue("ledger_dsn")
    return dsn


@pytest.fixture
def ledger_dsn(pg_database: str) -> str:
    """A fresh, unmigrated PostgreSQL database (for what only PostgreSQL has: advisory locks, NOTIFY).

    Importing pgserver (LocalPostgres does, to find binaries) warns when XDG_RUNTIME_DIR is unset, and
    warnings are errors: it is imported once with that warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        available_bindirs()
    return pg_database


@pytest.fixture
def repo(ledger_url: str) -> Iterator[Ledger]:
    """A repository on a ledger migrated to head, with a fixed clock."""
    upgrade_to_head(ledger_url)
    repository = Ledger.from_url(ledger_url, clock=lambda: NOW)
    try:
        yield repository
    finally:
        repository.dispose()
