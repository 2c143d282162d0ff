"""The bridge's write-backs to the scheduling database carry its replication origin and are not new work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from bridge.config import SourceSettings
from bridge.devtools.stack import Scheduler
from bridge.pipeline.echo import EchoFilter
from bridge.records.source import BookingRow, SourceTransaction
from bridge.source.reader import ReplicationSource
from bridge.source.setup import drop_slot, ensure_publication, ensure_slot
from bridge.source.writeback import WRITER_ORIGIN, SchedulerWriter

BOUND_SECONDS = 30


async def _next(stream: AsyncIterator[SourceTransaction]) -> SourceTransaction:
    async with asyncio.timeout(BOUND_SECONDS):
        return await anext(stream)


async def test_write_backs_are_tagged_and_emptied_while_other_writes_pass(scheduler_dsn: str) -> None:
    """A write-back reaches the stream under `mogli_bridge_writer` and the echo filter passes it on without
    changes (its LSN still acknowledged); a person's write in the scheduler passes unchanged."""
    scheduler = Scheduler(scheduler_dsn)
    slot = "wb_" + scheduler_dsn.rsplit("/", 1)[1]
    settings = SourceSettings(dsn=scheduler_dsn, slot=slot, publication=slot, status_interval_seconds=0.5)
    writer = SchedulerWriter(scheduler_dsn, settings.schema)
    try:
        owner = scheduler.add_user("005000000000001AAA")
        link = scheduler.add_link("one_on_one", owner)
        start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        booking = scheduler.add_booking(link, start=start, related="00Q000000000001AAA")
        ensure_publication(scheduler_dsn, settings.schema, slot)
        ensure_slot(scheduler_dsn, slot)
        source = ReplicationSource(settings, resume_lsn=None)
        filtered = EchoFilter(source)
        stream = filtered.transactions()
        try:
            snapshot = await _next(stream)
            while not snapshot.last_snapshot_chunk:
                snapshot = await _next(stream)
            filtered.acknowledge(snapshot.end_lsn)
            assert await writer.set_related_record(booking, "003000000000001AAA")
            scheduler.execute("UPDATE scheduler.bookings SET status = 'cancelled' WHERE id = %s", (booking,))
            own, person = await _next(stream), await _next(stream)
            filtered.acknowledge(person.end_lsn)
            related = {b["id"]: b["related_record_id"] for b in scheduler.rows("bookings")}
        finally:
            await source.close()
            await stream.aclose()  # type: ignore[attr-defined]
    finally:
        writer.close()
        scheduler.close()
        drop_slot(scheduler_dsn, slot)
    assert own.origin == WRITER_ORIGIN and own.changes == () and own.end_lsn < person.end_lsn
    assert filtered.suppressed == 1
    (change,) = person.changes
    assert person.origin is None and isinstance(change.row, BookingRow) and change.row.status == "cancelled"
    assert related[booking] == "003000000000001AAA"
