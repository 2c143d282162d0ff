"""A ledger that cannot be reached is a transient condition the daemon waits out, not a crash."""

from __future__ import annotations

import pytest

from bridge.devtools.localpg import LocalPostgres
from bridge.errors import LedgerUnavailable, TransientError
from bridge.ledger.async_ledger import AsyncLedger
from bridge.ledger.migrate import upgrade_to_head
from bridge.ledger.repository import LedgerRepository


async def test_a_stopped_ledger_server_raises_ledger_unavailable_and_recovers_when_back() -> None:
    """A stopped PostgreSQL ledger raises LedgerUnavailable (transient); after a restart it works again."""
    pg = LocalPostgres().start()
    try:
        url = pg.create_database("ledger").replace("postgresql://", "postgresql+psycopg2://")
        upgrade_to_head(url)
        ledger = AsyncLedger(LedgerRepository.from_url(url))
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
