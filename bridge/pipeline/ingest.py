"""Ingest: source transactions become durable ledger state, then their LSN is acknowledged.

The ledger is the outbox. A change is made durable (mirror rows, pending work, journal, checkpoint) in one
ledger transaction; only then is the source told it may release the WAL. Salesforce is not involved here,
so a Salesforce outage never holds WAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from bridge.aio import next_or_stop
from bridge.errors import LedgerUnavailable
from bridge.pipeline.ingest_order import Entry, IngestOrder, OrderLimits
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
READ_FIRST_POLL_SECONDS = 0.02  # while backlogs wait for the reader: how often to look again


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """How much to read ahead, and how much to gather into one ledger transaction."""

    batch: OrderLimits = field(default_factory=OrderLimits)  # what one batch takes (ingest_order.py)
    # Changes read ahead of the ledger: bounds memory while a large snapshot (1,000-row chunks) or backlog
    # streams in faster than the ledger takes it.
    max_queued_changes: int = 10000
    # With tenancy, past the snapshot: sized so that a backlog of 50,000 bookings in one org can be read past,
    # to the other orgs' bookings behind it (ingest_order.py).
    sorted_queued_changes: int = 65536
    # While the reader works through a backlog, a lane with a backlog of its own waits for the reader, for
    # at most this long per catch-up.
    read_first_seconds: float = 1.0


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
    """Moves source transactions into the ledger in batches and acknowledges them.

    The read-ahead is sorted per org (ingest_order.py) so that one org's backlog does not hold another org's
    bookings; what is acknowledged is only ever the applied prefix of the stream.
    """

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
        self._order = IngestOrder(reorder=tenancy, limits=limits.batch)
        self._arrived = asyncio.Event()
        self._read_all = False
        self._room = asyncio.Event()
        self._reader_waits = False  # the read-ahead is full: the reader waits for the ledger
        self._read_first_since: float | None = None
        self.applied_lsn: int | None = None
        self.applied_transactions = 0
        self.last_commit_time: datetime | None = None

    @property
    def read_ahead(self) -> int:
        """Changes read from the stream and not yet taken into a batch."""
        return self._order.queued_changes

    @property
    def applied_ahead(self) -> int:
        """Transactions applied ahead of the acknowledged position (another org's backlog before them)."""
        return self._order.ahead

    async def run(self, stop: asyncio.Event) -> None:
        """Ingest until `stop` is set; the batch in hand is always finished first."""
        self._stop = stop
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._read_source())
            try:
                await self._ingest_until(stop)
            finally:
                reader.cancel()

    async def _read_source(self) -> None:
        """Read ahead of the ledger, up to the change budget."""
        async for read in self._source.transactions():
            txn = read if self._tenancy else without_organizations(read)
            sortable = self._tenancy and not txn.snapshot
            budget = self._limits.sorted_queued_changes if sortable else self._limits.max_queued_changes
            while self._order.queued_changes >= budget:
                self._room.clear()
                self._reader_waits = True
                await self._room.wait()
            self._reader_waits = False
            self._order.add(txn)
            self._arrived.set()
        self._read_all = True
        self._arrived.set()

    async def _ingest_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._order.waiting():
                if self._read_all:
                    return
                self._arrived.clear()
                await next_or_stop(self._arrived.wait(), stop)
                continue
            if self._tenancy:
                await self._sort_by_org()
            read_first = self._read_first()
            batch = self._order.take(read_first=read_first)
            self._room.set()
            if not batch:
                if read_first:  # only backlogs are queued: let the reader get ahead for a moment
                    self._arrived.clear()
                    await next_or_stop(self._arrived.wait(), stop, within=READ_FIRST_POLL_SECONDS)
                continue
            # The ledger write and the acknowledgement belong together: a cancellation (SIGTERM) must not
            # separate them, so they are shielded.
            await asyncio.shield(self._apply(batch))

    def _read_first(self) -> bool:
        """Whether backlogged lanes wait for the reader now.

        The reader and the ledger share one interpreter. While the reader is behind the server, every
        change it has not read may be another org's booking, and a big import written to the ledger
        meanwhile halves the reader's speed. So while the source is behind (and has room to read into), a
        lane with a backlog waits, for at most `read_first_seconds` per catch-up: after that, reading and
        writing go on side by side until the reader has caught up; with tenancy off, never."""
        if not self._tenancy or self._read_all or not self._source.behind:
            self._read_first_since = None  # caught up: the next backlog may wait again
            return False
        if self._reader_waits or not self._order.backlogged():
            return False  # the read-ahead is full (only writing makes room), or nothing to hold back
        now = asyncio.get_running_loop().time()
        if self._read_first_since is None:
            self._read_first_since = now
        return now - self._read_first_since < self._limits.read_first_seconds

    async def _sort_by_org(self) -> None:
        """Learn the orgs of the queued bookings' links, then sort what can be sorted into lanes. With the
        ledger away nothing is sorted: the batch is then taken in stream order and waits for the ledger."""
        wanted = self._order.unknown_links()
        found: dict[str, str | None] = {}
        if wanted:
            try:
                found = await self._ledger.link_orgs(wanted)
            except LedgerUnavailable:
                return
        self._order.classify(found, asked=wanted)

    async def _apply_durably(self, batch: IngestBatch) -> object:
        """Write the batch to the ledger, waiting out a ledger that is unreachable; nothing is acknowledged
        meanwhile, so PostgreSQL keeps every change (the reader pauses once its read-ahead is full)."""
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

    async def _apply(self, entries: list[Entry]) -> None:
        now = self._clock()
        batch = [e.txn for e in entries]
        quiet: set[str] = set()
        for txn in batch:
            quiet |= quiet_bookings(txn, self._backfill, now)
        settled = self._order.settled(entries)
        summary = await self._apply_durably(
            IngestBatch(
                transactions=tuple(batch),
                now=now,
                quiet_booking_ids=frozenset(quiet),
                position=settled.position,
                reordered=True,
            )
        )
        self._order.applied(entries)
        if settled.ack_lsn is not None:
            self._source.acknowledge(settled.ack_lsn)
            self.applied_lsn = settled.ack_lsn
        self.applied_transactions += len(batch)
        self.last_commit_time = max(t.commit_time for t in batch)
        log.info(
            "ingest.batch_applied",
            transactions=len(batch),
            changes=sum(len(t.changes) for t in batch),
            snapshot=batch[-1].snapshot,
            lsn=settled.ack_lsn,
            ahead=self._order.ahead,
            skipped_by_backfill=len(quiet),
            summary=str(summary) if summary is not None else None,
        )
        if any(
            c.op is not ChangeOp.TRUNCATE or c.table is SourceTable.BOOKINGS for t in batch for c in t.changes
        ):
            self._on_work()
        if self._on_summary is not None and isinstance(summary, IngestSummary):
            self._on_summary(summary)
