"""Ingest waits out a ledger outage: nothing is acknowledged until the batch is durable, nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.errors import LedgerUnavailable
from bridge.pipeline import ingest
from bridge.pipeline.ingest import Ingestor
from bridge.records.source import (
    BackfillPolicy,
    BookingRow,
    ChangeOp,
    IngestBatch,
    SourceChange,
    SourceTable,
    SourceTransaction,
)

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


class FakeSource:
    """A ChangeSource with three transactions that records acknowledgements."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    async def transactions(self) -> AsyncIterator[SourceTransaction]:
        for lsn in (100, 200, 300):
            row = BookingRow(id=f"b{lsn}")
            yield SourceTransaction(lsn, NOW, (SourceChange(SourceTable.BOOKINGS, ChangeOp.INSERT, row),))
            await asyncio.sleep(0)

    behind = False  # never behind: batches are taken as soon as read

    def acknowledge(self, lsn: int) -> None:
        self.acked.append(lsn)


class FlakyLedger:
    """A ledger whose first `failures` writes find the database unreachable."""

    def __init__(self, failures: int, source: FakeSource) -> None:
        self.failures = failures
        self.source = source
        self.stored: list[int] = []
        self.acked_at_failure: list[list[int]] = []

    async def apply_source_batch(self, batch: IngestBatch) -> Any:
        if self.failures:
            self.failures -= 1
            self.acked_at_failure.append(list(self.source.acked))
            raise LedgerUnavailable("ledger unavailable (OperationalError)")
        self.stored += [t.end_lsn for t in batch.transactions]
        return None


async def test_ledger_outage_is_waited_out_and_nothing_is_acknowledged_before_it_is_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three failed writes, then success: every transaction stored once, acknowledgements only afterwards."""
    monkeypatch.setattr(ingest, "LEDGER_RETRY_FIRST_SECONDS", 0.01)
    source = FakeSource()
    ledger = FlakyLedger(3, source)
    stop = asyncio.Event()
    worker = Ingestor(source, ledger, backfill=BackfillPolicy(), clock=lambda: NOW, on_work=lambda: None)  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run(stop))
    for _ in range(500):
        if sorted(ledger.stored) == [100, 200, 300]:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(ledger.stored) == [100, 200, 300]
    assert all(not acked for acked in ledger.acked_at_failure), "acknowledged before the ledger had it"
    assert source.acked and source.acked[-1] == 300
