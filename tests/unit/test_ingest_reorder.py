"""The Ingestor with the read-ahead sorted by org: a small org's booking read behind a big org's backlog is
applied in the first batch, and the source is acknowledged only up to the applied prefix of the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime

from bridge.pipeline.ingest import IngestLimits, Ingestor
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

    behind = False  # never behind: batches are taken as soon as read

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


async def _ingest_three(source: Source | BehindSource, limits: IngestLimits = IngestLimits()) -> Ledger:
    """Run an Ingestor over `source` until its three transactions are applied; the batches it chose."""
    ledger = Ledger()
    stop = asyncio.Event()
    applied = asyncio.Event()

    def on_work() -> None:
        if ingestor.applied_transactions == 3:
            applied.set()

    ingestor = Ingestor(
        source,  # type: ignore[arg-type]
        ledger,  # type: ignore[arg-type]
        backfill=BackfillPolicy(),
        clock=lambda: NOW,
        on_work=on_work,
        limits=limits,
    )
    task = asyncio.create_task(ingestor.run(stop))
    await asyncio.wait_for(applied.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    return ledger


async def test_the_small_orgs_booking_passes_and_only_the_applied_prefix_is_acknowledged() -> None:
    source = Source()
    ledger = await _ingest_three(source)
    chosen = [[t.end_lsn for t in b.transactions] for b in ledger.batches]
    # The small org's booking first, in a batch of its own; then the big org alone, a whole batch.
    assert chosen == [[300], [100, 200]]
    assert all(b.reordered for b in ledger.batches)
    # After the first batch nothing of the stream's prefix is applied (300 is ahead of it), after the
    # second all of it: the position stored and the LSN acknowledged never pass an unapplied transaction.
    assert [b.position for b in ledger.batches] == [None, 300]
    assert source.acked == [300]


class BehindSource:
    """Two 1,000-booking transactions of one org and one booking of another, read while the source is far
    behind the server; then it has caught up (after `caught_up_after` seconds, or never)."""

    def __init__(self, caught_up_after: float | None) -> None:
        self.acked: list[int] = []
        self.behind = True
        self._caught_up_after = caught_up_after

    async def transactions(self) -> AsyncIterator[SourceTransaction]:
        for txn in (bookings(100, "big-link", 1000), bookings(200, "big-link", 1000)):
            yield txn
            await asyncio.sleep(0.01)  # the reader's next wakeup
        yield bookings(300, "small-link", 1)
        if self._caught_up_after is not None:
            await asyncio.sleep(self._caught_up_after)
            self.behind = False
        await asyncio.Event().wait()  # the stream stays open

    def acknowledge(self, lsn: int) -> None:
        self.acked.append(lsn)


async def test_while_the_reader_is_behind_the_backlog_waits_for_it() -> None:
    """The big org's transactions are read first, but while the source is behind they wait: the small org's
    booking, read after them, is applied first; the backlog follows once the source has caught up."""
    source = BehindSource(caught_up_after=0.1)
    ledger = await _ingest_three(source, IngestLimits())
    assert [[t.end_lsn for t in b.transactions] for b in ledger.batches] == [[300], [100, 200]]
    assert [b.position for b in ledger.batches] == [None, 300]
    assert source.acked == [300]


async def test_a_reader_that_stays_behind_holds_a_backlog_only_for_a_while() -> None:
    """A source that never catches up (WAL of other tables, say) does not hold a backlog for ever: after
    `read_first_seconds` it is taken as usual."""
    source = BehindSource(caught_up_after=None)
    ledger = await _ingest_three(source, IngestLimits(read_first_seconds=0.2))
    assert [[t.end_lsn for t in b.transactions] for b in ledger.batches] == [[300], [100, 200]]
    assert source.behind
