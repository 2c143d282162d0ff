"""Analyst views (migration 0002) on SQLite and PostgreSQL, the README example queries, the upgrade path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from bridge.ledger import current_revision, head_revision, make_engine, upgrade_to_head
from bridge.ledger.migrate import alembic_config
from bridge.ledger.repository import Ledger
from tests.adapters.admin.filled import FAILED_CODE, MOGLI, Filled, fill
from tests.adapters.ledger.factory import NOW

# The README's example queries, verbatim: the tests below run every one of them.
LINK_SUMMARY = """
SELECT link_id, title, mogli_event_id, bookings, synced, pending, failed, last_booking_synced_at
FROM v_link_summary
ORDER BY failed DESC, bookings DESC
"""
FAILURES_BY_REASON = """
SELECT entity, error_code, failures, last_seen
FROM v_failures_by_reason
ORDER BY failures DESC
"""
DAILY_VOLUME = """
SELECT day, SUM(changes) AS changes
FROM v_daily_volume
WHERE direction = 'outbound' AND action LIKE 'salesforce.%'
GROUP BY day
ORDER BY day
"""
RECONCILIATION_DRIFT = """
SELECT run_id, state, dry_run, drift_found, drift_repaired
FROM v_reconciliation_drift
ORDER BY run_id DESC
"""


def _rows(url: str, sql: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(m) for m in connection.execute(text(sql)).mappings()]
    finally:
        engine.dispose()


@pytest.fixture
async def filled(ledger_url: str) -> AsyncIterator[Filled]:
    """A ledger at head with a little of everything."""
    upgrade_to_head(ledger_url)
    repo = Ledger.from_url(ledger_url, clock=lambda: NOW)
    try:
        yield await fill(repo)
    finally:
        repo.dispose()


async def test_link_summary_counts_bookings_by_state(ledger_url: str, filled: Filled) -> None:
    """v_link_summary: per link its Mogli Event and bookings by state; an unbooked link shows zeros."""
    rows = {r["link_id"]: r for r in _rows(ledger_url, LINK_SUMMARY)}
    l1 = rows["l1"]
    assert l1["mogli_event_id"] == MOGLI
    assert (l1["bookings"], l1["synced"], l1["pending"], l1["failed"]) == (3, 1, 1, 1)
    assert l1["last_booking_synced_at"] is not None
    assert rows[filled.unbooked_link]["bookings"] == 0
    assert next(iter(rows)) == "l1"  # ordered by failures first


async def test_failures_by_reason_groups_error_codes(ledger_url: str, filled: Filled) -> None:
    """v_failures_by_reason: one row per entity and error code with its count."""
    rows = _rows(ledger_url, FAILURES_BY_REASON)
    assert [(r["entity"], r["error_code"], r["failures"]) for r in rows] == [("activity", FAILED_CODE, 1)]


async def test_daily_volume_counts_journal_actions_per_day(ledger_url: str, filled: Filled) -> None:
    """v_daily_volume: the journal's outbound Salesforce actions of the day, summed per UTC day."""
    rows = _rows(ledger_url, DAILY_VOLUME)
    assert [r["day"] for r in rows] == [NOW.date().isoformat()]
    # one Mogli Event upsert, one Event upsert, one failed Event
    assert int(rows[0]["changes"]) == 3


async def test_reconciliation_drift_per_run(ledger_url: str, filled: Filled) -> None:
    """v_reconciliation_drift: drift found and repaired per run."""
    [row] = _rows(ledger_url, RECONCILIATION_DRIFT)
    assert row["run_id"] == filled.run_id and row["state"] == "finished"
    assert (row["drift_found"], row["drift_repaired"]) == (2, 1)


async def test_upgrade_from_0001_keeps_data_and_adds_views(ledger_url: str) -> None:
    """A ledger holding rows at revision 0001 upgrades to head with every row intact, and the views answer.
    (The rows are written at head, where today's code can write them, and carried down to 0001 first.)"""
    upgrade_to_head(ledger_url)
    repo = Ledger.from_url(ledger_url, clock=lambda: NOW)
    try:
        filled = await fill(repo)
        before = await repo.counts()
    finally:
        repo.dispose()
    command.downgrade(alembic_config(ledger_url), "0001")
    assert current_revision(ledger_url) == "0001"
    assert upgrade_to_head(ledger_url) == head_revision() is not None
    repo = Ledger.from_url(ledger_url, clock=lambda: NOW)
    try:
        assert await repo.counts() == before
        failed = await repo.get_activity(filled.failed)
        assert failed is not None and failed.state == "failed" and failed.error_code == FAILED_CODE
        run = await repo.get_reconciliation(filled.run_id)
        assert run is not None and run.summary == {"found": 2, "repaired": 1}
    finally:
        repo.dispose()
    assert {r["link_id"] for r in _rows(ledger_url, LINK_SUMMARY)} == {"l1", filled.unbooked_link}


async def test_downgrade_to_0001_drops_the_views_only(ledger_url: str) -> None:
    """Downgrading to 0001 removes the views and keeps the tables and their rows."""
    upgrade_to_head(ledger_url)
    repo = Ledger.from_url(ledger_url, clock=lambda: NOW)
    try:
        await fill(repo)
    finally:
        repo.dispose()
    command.downgrade(alembic_config(ledger_url), "0001")
    assert current_revision(ledger_url) == "0001"
    assert _rows(ledger_url, "SELECT COUNT(*) AS n FROM activities") == [{"n": 3}]
    with pytest.raises(Exception, match="v_link_summary"):
        _rows(ledger_url, LINK_SUMMARY)
