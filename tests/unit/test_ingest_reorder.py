"""The Ingestor with the read-ahead sorted by org: a small org's booking read behind a big org's backlog is
applied in the first batch, and the source is acknowledged only up to the applied prefix of the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime

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

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
LINK_ORGS = {"big-link": "big", "small-link": "small"}


def bookings(lsn: int, link: str, count: int) -> SourceTransaction:
    """`count` new bookings on `link`, committed at `lsn`."""
    rows = (BookingRow(id=f"{lsn}-{k}", link_id=link) for k in range(count))
    return SourceTransaction(
        lsn, NOW, tuple(SourceChange(SourceTable.BOOKINGS, ChangeOp.INSERT, r) for r in rows)
    )


class Source:
    """Two 1,000-booking transactions of one org, then one booking of another; records acknowledgements."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    async def transactions(self) -> AsyncIterator[SourceTransaction]:
        for txn in (
            bookings(100, "big-link", 1000),
            bookings(200, "big-link", 1000),
            bookings(300, "small-link", 1),
        ):
            yield txn  # all three are read before the first batch is chosen (no await in between)

    def acknowledge(self, lsn: int) -> None:
        self.acked.append(lsn)


class Ledger:
    """Knows the two links' orgs; records each batch."""

    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []

    async def link_orgs(self, link_ids: Collection[str]) -> dict[str, str | None]:
        return {link: LINK_ORGS[link] for link in link_ids if link in LINK_ORGS}

    async def apply_source_batch(self, batch: IngestBatch) -> None:
        self.batches.append(batch)


async def test_the_small_orgs_booking_passes_and_only_the_applied_prefix_is_acknowledged() -> None:
    source = Source()
    ledger = Ledger()
    stop = asyncio.Event()
    applied = asyncio.Event()

    def on_work() -> None:
        if ingestor.applied_transactions == 3:
            applied.set()

    ingestor = Ingestor(source, ledger, backfill=BackfillPolicy(), clock=lambda: NOW, on_work=on_work)  # type: ignore[arg-type]
    task = asyncio.create_task(ingestor.run(stop))
    await asyncio.wait_for(applied.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    chosen = [[t.end_lsn for t in b.transactions] for b in ledger.batches]
    # Two lanes busy: each takes its share, the big one at least its first transaction.
    assert chosen == [[100, 300], [200]]
    assert all(b.reordered for b in ledger.batches)
    # After the first batch the stream's applied prefix ends at 100 (300 is ahead of it), after the second
    # at 300: the position stored and the LSN acknowledged never pass an unapplied transaction.
    assert [b.position for b in ledger.batches] == [100, 300]
    assert source.acked == [100, 300]
