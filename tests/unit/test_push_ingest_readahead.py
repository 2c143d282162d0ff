"""The ingestor reads ahead of the ledger by a bounded number of changes, whatever the transaction sizes.

A hand-written ChangeSource yields large snapshot-like chunks; a hand-written Ledger holds each batch until
the test lets it go, so the test sees exactly how far the reader got ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.pipeline.ingest import IngestLimits, Ingestor
from bridge.pipeline.ingest_order import OrderLimits
from bridge.records.outbound import ActivityOutcome, ActivityWork, LinkOutcome, LinkWork
from bridge.records.source import (
    BackfillMode,
    BackfillPolicy,
    ChangeOp,
    IngestBatch,
    SourceChange,
    SourceTable,
    SourceTransaction,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class ChunkSource:
    """`count` transactions of `size` TRUNCATE-free changes each; remembers how many were taken."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.taken = 0
        self.acknowledged: list[int] = []

    async def transactions(self) -> AsyncIterator[SourceTransaction]:
        """Yield every chunk, as fast as the consumer takes them."""
        change = SourceChange(SourceTable.BOOKINGS, ChangeOp.DELETE, None)
        for n in range(1, self.count + 1):
            self.taken += 1
            yield SourceTransaction(end_lsn=n, commit_time=NOW, changes=(change,) * self.size)

    behind = False  # never behind: batches are taken as soon as read

    def acknowledge(self, lsn: int) -> None:
        """Remember acknowledgements."""
        self.acknowledged.append(lsn)


class GatedLedger:
    """Applies a batch only when the test releases it."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = asyncio.Event()

    async def read_checkpoint(self, stream: str) -> str | None:
        """No checkpoint."""
        return None

    async def apply_source_batch(self, batch: IngestBatch) -> Any:
        """Wait for the gate, then count the batch's changes."""
        await self.gate.wait()
        self.batches.append(sum(len(t.changes) for t in batch.transactions))
        return None

    async def claim_link_work(self, now: datetime, limit: int) -> list[LinkWork]:
        """Unused by the ingestor."""
        return []

    async def claim_activity_work(
        self, now: datetime, limit: int, exclude: Collection[str] = ()
    ) -> list[ActivityWork]:
        """Unused by the ingestor."""
        return []

    async def record_link_outcomes(self, outcomes: Sequence[LinkOutcome], now: datetime) -> None:
        """Unused by the ingestor."""

    async def record_activity_outcomes(self, outcomes: Sequence[ActivityOutcome], now: datetime) -> None:
        """Unused by the ingestor."""


@pytest.mark.parametrize("tenancy", [False, True])
async def test_read_ahead_is_bounded_by_changes_and_everything_arrives(tenancy: bool) -> None:
    """With the ledger stalled, 1,000-change chunks stop being read after the change budget (the sorted
    read-ahead's with tenancy, the plain one without); once the ledger moves, every chunk is applied and the
    last LSN acknowledged."""
    source, ledger = ChunkSource(count=40, size=1000), GatedLedger()
    all_applied = asyncio.Event()

    def on_work() -> None:
        if ingestor.applied_transactions == 40:
            all_applied.set()

    ingestor = Ingestor(
        source,
        ledger,
        backfill=BackfillPolicy(mode=BackfillMode.NONE),
        clock=lambda: NOW,
        on_work=on_work,
        tenancy=tenancy,
        limits=IngestLimits(
            batch=OrderLimits(max_transactions=500, max_changes=5000),
            max_queued_changes=3000 if not tenancy else 10**9,
            sorted_queued_changes=3000 if tenancy else 10**9,
        ),
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(ingestor.run(stop))
    for _ in range(50):
        await asyncio.sleep(0)
    # At most a batch (5,000 changes) is in the ledger's hands, the budget (3,000) waits in the queue and
    # one chunk in the reader for room: 9 of the 40 chunks.
    assert source.taken <= 9
    ledger.gate.set()
    await asyncio.wait_for(all_applied.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(runner, timeout=10)
    assert sum(ledger.batches) == 40_000
    assert source.acknowledged[-1] == 40
