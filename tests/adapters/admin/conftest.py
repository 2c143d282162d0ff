"""Admin adapter fixtures: the ledger tests' `ledger_url` (SQLite and PostgreSQL)."""

from __future__ import annotations

from tests.adapters.ledger.conftest import ledger_url

__all__ = ["ledger_url"]
