"""A restart after a transaction was applied ahead of the stream position, on a real server and ledger.

One org's backlog (three transactions of 1,000 bookings) is read before another org's single booking;
the ingest applies that booking ahead of (at least) the backlog's second and third transactions and stops
there, as a daemon stopped (or killed after the commit) would. The source is acknowledged only up to what
precedes the unapplied backlog, so PostgreSQL sends the single booking again after the restart: it must be
skipped, and every booking must be in the ledger once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.ledger import ingest as ledger_ingest
from bridge.ledger.migrate import upgrade_to_head
from bridge.ledger.repository import Ledger
from bridge.pipeline.ingest import IngestLimits, Ingestor
from bridge.pipeline.ingest_order import OrderLimits
from bridge.pipeline.ports import IngestLedger
from bridge.records.ledger import IngestSummary
from bridge.records.source import BackfillPolicy, IngestBatch
from bridge.source.reader import ReplicationSource
from tests.integration.replication_support import SourceDb, wait_until

BACKLOG = 3  # transactions of the big org, of 1,000 bookings each


class GatedLedger:
    """The real ledger, whose writes wait for `gate`; sets `stop` once a batch left a transaction ahead."""

    def __init__(self, ledger: Ledger, stop: asyncio.Event) -> None:
        self.ledger = ledger
        self.gate = asyncio.Event()
        self.stop = stop
        self.ahead_batches = 0
        self.at_gate = 0  # changes of the batch waiting at the gate
        self.applied = 0  # changes applied past the snapshot

    async def link_orgs(self, link_ids: Collection[str]) -> dict[str, str | None]:
        return await self.ledger.link_orgs(link_ids)

    async def apply_source_batch(self, batch: IngestBatch) -> IngestSummary:
        self.at_gate = sum(len(t.changes) for t in batch.transactions)
        await self.gate.wait()
        summary = await self.ledger.apply_source_batch(batch)
        if not batch.transactions[-1].snapshot:
            self.applied += self.at_gate
        self.at_gate = 0
        if not batch.transactions[-1].snapshot and await self.ledger.read_checkpoint("source.ahead"):
            self.ahead_batches += 1  # the ledger lists a transaction applied ahead of the stored position
            self.stop.set()
        return summary


def ingestor(source: ReplicationSource, ledger: IngestLedger, **options: Any) -> Ingestor:
    """An Ingestor with tenancy on, the wall clock and the default backfill."""
    return Ingestor(
        source,
        ledger,
        backfill=BackfillPolicy(),
        clock=lambda: datetime.now(UTC),
        on_work=lambda: None,
        **options,
    )


def add_org_user_link(db: SourceDb) -> str:
    """An organization with one user and one link; returns the link id."""
    org, user = str(uuid.uuid4()), str(uuid.uuid4())
    db.run("INSERT INTO scheduler.organizations (id, name) VALUES (%s, 'Customer')", (org,))
    db.run(
        "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id, organization_id)"
        " VALUES (%s, 'p@example.invalid', 'P', '005000000000001AAA', %s)",
        (user, org),
    )
    return db.add_link(user)


def source_inserts(path: Path) -> tuple[int, int]:
    """(journal entries of new bookings, distinct bookings among them) in the ledger file."""
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT entity_key) FROM journal"
            " WHERE entity = 'activity' AND action = 'source.insert'"
        ).fetchone()
    return int(row[0]), int(row[1])


async def test_a_booking_applied_ahead_is_skipped_when_the_stream_brings_it_again(
    source_db: SourceDb, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.sqlite3"
    upgrade_to_head(f"sqlite:///{path}")
    ledger = Ledger.from_url(f"sqlite:///{path}")
    big, small = add_org_user_link(source_db), add_org_user_link(source_db)
    stop = asyncio.Event()
    gated = GatedLedger(ledger, stop)
    gated.gate.set()
    # One lane alone takes at most 1,000 changes per batch: the backlog's transactions go one by one.
    limits = IngestLimits(batch=OrderLimits(max_changes=1000))
    source = ReplicationSource(source_db.settings, resume_lsn=None)
    first = ingestor(source, gated, limits=limits)
    task = asyncio.create_task(first.run(stop))
    try:
        await wait_until(lambda: ledger.call(ledger_ingest.link_orgs, [big, small]).keys() == {big, small})
        gated.gate.clear()
        for _ in range(BACKLOG):
            source_db.add_bookings(big, 1000)
        source_db.add_bookings(small, 1)
        # The first batch (the backlog's first transaction, or the small booking) waits at the gate while
        # everything else is read.
        await wait_until(lambda: gated.at_gate and first.read_ahead + gated.at_gate == BACKLOG * 1000 + 1)
        gated.gate.set()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        await source.close()
    assert gated.ahead_batches == 1
    position = await ledger.read_checkpoint("source")
    ahead = await ledger.read_checkpoint("source.ahead")
    assert position and ahead and int(ahead) > int(position), (position, ahead)
    inserted, _ = source_inserts(path)
    # The small booking alone, or after the backlog's first transaction (the order depends on how much was
    # read when the first batch was chosen); either way the rest of the backlog was not applied.
    assert inserted == gated.applied and inserted in (1, 1000 + 1), inserted

    # The restart: the stream resumes at the stored position and brings the small booking again.
    stop = asyncio.Event()
    resumed = ReplicationSource(source_db.settings, resume_lsn=int(position))
    summaries: list[IngestSummary] = []
    second = ingestor(resumed, ledger, on_summary=summaries.append)
    task = asyncio.create_task(second.run(stop))
    try:
        await wait_until(lambda: source_inserts(path)[0] >= BACKLOG * 1000 + 1)
        await wait_until(lambda: second.applied_lsn is not None and second.applied_lsn >= int(ahead))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await resumed.close()
        ledger.dispose()
    assert sum(s.skipped_txns for s in summaries) == 1, (
        "the small booking was not brought again, or applied twice"
    )
    assert source_inserts(path) == (BACKLOG * 1000 + 1, BACKLOG * 1000 + 1)
