"""Ingest: source transactions become durable ledger state, then their LSN is acknowledged.

The ledger is the outbox. A change is made durable (mirror rows, pending work, journal, checkpoint) in one
ledger transaction; only then is the source told it may release the WAL. Salesforce is not involved here,
so a Salesforce outage never holds WAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from bridge.aio import Interrupted, next_or_stop
from bridge.errors import LedgerUnavailable
from bridge.pipeline.ports import ChangeSource, IngestLedger
from bridge.records.ledger import IngestSummary
from bridge.records.source import (
    BackfillPolicy,
    BookingRow,
    ChangeOp,
    IngestBatch,
    SourceTable,
    SourceTransaction,
    UserRow,
)
from bridge.rules.backfill import backfill_admits

log = structlog.get_logger(__name__)
LEDGER_RETRY_FIRST_SECONDS = 0.5
LEDGER_RETRY_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """How much to gather into one ledger transaction."""

    max_transactions: int = 500
    max_changes: int = 5000
    # Changes read ahead of the ledger: bounds memory while a large snapshot (1,000-row chunks) or backlog
    # streams in faster than the ledger takes it.
    max_queued_changes: int = 10000


def without_organizations(txn: SourceTransaction) -> SourceTransaction:
    """With tenancy off every user is the default org's: the source's `users.organization_id` is dropped
    (organizations and connections are still mirrored, and do nothing)."""
    if not any(isinstance(c.row, UserRow) and c.row.organization_id for c in txn.changes):
        return txn
    changes = tuple(
        replace(c, row=replace(c.row, organization_id=None)) if isinstance(c.row, UserRow) else c
        for c in txn.changes
    )
    return replace(txn, changes=changes)


def quiet_bookings(txn: SourceTransaction, policy: BackfillPolicy, now: datetime) -> set[str]:
    """Snapshot bookings that the backfill policy leaves out of Salesforce work."""
    if not txn.snapshot:
        return set()
    quiet: set[str] = set()
    for change in txn.changes:
        row = change.row
        admitted = not isinstance(row, BookingRow) or backfill_admits(policy, row, now)
        if change.table is SourceTable.BOOKINGS and isinstance(row, BookingRow) and not admitted:
            quiet.add(row.id)
    return quiet


class Ingestor:
    """Moves source transactions into the ledger in batches and acknowledges them."""

    def __init__(
        self,
        source: ChangeSource,
        ledger: IngestLedger,
        *,
        backfill: BackfillPolicy,
        clock: Callable[[], datetime],
        on_work: Callable[[], None],
        on_summary: Callable[[IngestSummary], None] | None = None,
        tenancy: bool = True,
        limits: IngestLimits = IngestLimits(),
        queue_size: int = 1000,
    ) -> None:
        self._source = source
        self._ledger = ledger
        self._backfill = backfill
        self._clock = clock
        self._on_work = on_work
        self._on_summary = on_summary  # with tenancy: the orgs that got work, whether connections changed
        self._tenancy = tenancy  # off: users' organizations are dropped (every booking is the default org's)
        self._stop = asyncio.Event()
        self._limits = limits
        self._queue: asyncio.Queue[SourceTransaction | None] = asyncio.Queue(maxsize=queue_size)
        self._queued_changes = 0
        self._room = asyncio.Event()
        self.applied_lsn: int | None = None
        self.applied_transactions = 0
        self.last_commit_time: datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Ingest until `stop` is set; the batch in hand is always finished first."""
        self._stop = stop
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._read_source())
            try:
                await self._ingest_until(stop, reader)
            finally:
                reader.cancel()

    async def _read_source(self) -> None:
        """Feed the bounded queue from the source iterator (the queue gives us non-blocking batching)."""
        async for read in self._source.transactions():
            txn = read if self._tenancy else without_organizations(read)
            while self._queued_changes >= self._limits.max_queued_changes:
                self._room.clear()
                await self._room.wait()
            self._queued_changes += len(txn.changes)
            await self._queue.put(txn)
        await self._queue.put(None)

    def _taken(self, txn: SourceTransaction) -> SourceTransaction:
        """Account for a transaction leaving the queue (and wake the reader if it waits for room)."""
        self._queued_changes -= len(txn.changes)
        self._room.set()
        return txn

    async def _ingest_until(self, stop: asyncio.Event, reader: asyncio.Task[None]) -> None:
        while not stop.is_set():
            first = await self._next_or_stop(stop)
            if first is None:
                if reader.done() and self._queue.empty():
                    return
                continue
            batch = [first]
            changes = len(first.changes)
            while (
                len(batch) < self._limits.max_transactions
                and changes < self._limits.max_changes
                and not self._queue.empty()
            ):
                nxt = self._queue.get_nowait()
                if nxt is None:
                    break
                batch.append(self._taken(nxt))
                changes += len(nxt.changes)
            # The ledger write and the acknowledgement belong together: a cancellation (SIGTERM) must not
            # separate them, so they are shielded.
            await asyncio.shield(self._apply(batch))

    async def _next_or_stop(self, stop: asyncio.Event) -> SourceTransaction | None:
        txn = await next_or_stop(self._queue.get(), stop)
        if txn is None or isinstance(txn, Interrupted):
            return None
        return self._taken(txn)

    async def _apply_durably(self, batch: IngestBatch) -> object:
        """Write the batch to the ledger, waiting out a ledger that is unreachable; nothing is acknowledged
        meanwhile, so PostgreSQL keeps every change (the reader pauses once its queue is full)."""
        delay = LEDGER_RETRY_FIRST_SECONDS
        while True:
            try:
                return await self._ledger.apply_source_batch(batch)
            except LedgerUnavailable as exc:
                if self._stop.is_set():
                    raise
                log.warning("ingest.ledger_unavailable", retry_in_seconds=delay, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, LEDGER_RETRY_MAX_SECONDS)

    async def _apply(self, batch: list[SourceTransaction]) -> None:
        now = self._clock()
        quiet: set[str] = set()
        for txn in batch:
            quiet |= quiet_bookings(txn, self._backfill, now)
        summary = await self._apply_durably(
            IngestBatch(transactions=tuple(batch), now=now, quiet_booking_ids=frozenset(quiet))
        )
        last = batch[-1]
        self._source.acknowledge(last.end_lsn)
        self.applied_lsn = last.end_lsn
        self.applied_transactions += len(batch)
        self.last_commit_time = last.commit_time
        log.info(
            "ingest.batch_applied",
            transactions=len(batch),
            changes=sum(len(t.changes) for t in batch),
            snapshot=last.snapshot,
            lsn=last.end_lsn,
            skipped_by_backfill=len(quiet),
            summary=str(summary) if summary is not None else None,
        )
        if any(
            c.op is not ChangeOp.TRUNCATE or c.table is SourceTable.BOOKINGS for t in batch for c in t.changes
        ):
            self._on_work()
        if self._on_summary is not None and isinstance(summary, IngestSummary):
            self._on_summary(summary)
