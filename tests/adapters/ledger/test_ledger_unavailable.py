"""A ledger that cannot be reached is a transient condition the daemon waits out, not a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.devtools.localpg import LocalPostgres
from bridge.errors import LedgerUnavailable, TransientError
from bridge.ledger.migrate import upgrade_to_head
from bridge.ledger.repository import Ledger


async def test_a_stopped_ledger_server_raises_ledger_unavailable_and_recovers_when_back() -> None:
    """A stopped PostgreSQL ledger raises LedgerUnavailable (transient); after a restart it works again."""
    pg = LocalPostgres().start()
    try:
        url = pg.create_database("ledger").replace("postgresql://", "postgresql+psycopg2://")
        upgrade_to_head(url)
        ledger = Ledger.from_url(url)
        try:
            await ledger.write_checkpoint("source", "42")
            # A clean stop: the test cluster runs with synchronous_commit=off, so a crash could drop the
            # migration itself, which is not what this test is about.
            pg.stop(remove=False, mode="fast")
            with pytest.raises(LedgerUnavailable) as err:
                await ledger.read_checkpoint("source")
            assert isinstance(err.value, TransientError)
            pg.start()
            assert await ledger.read_checkpoint("source") == "42"
        finally:
            await ledger.close()
    finally:
        pg.stop()


async def test_a_reconciliation_read_on_an_unreachable_ledger_raises_ledger_unavailable(
    tmp_path: Path,
) -> None:
    """Reconciliation's own reads go through the one repository's error translation: a ledger that cannot be
    opened raises LedgerUnavailable (transient), not a raw driver error."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/gone/ledger.sqlite3")
    shutil.rmtree(tmp_path / "gone")  # the engine made the directory; without it SQLite cannot open the file
    try:
        with pytest.raises(LedgerUnavailable) as err:
            await ledger.link_ids()
        assert isinstance(err.value, TransientError)
        with pytest.raises(LedgerUnavailable):
            await ledger.find_resumable({"full": True}, dry_run=False)
    finally:
        await ledger.close()
