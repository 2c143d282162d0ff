"""Whether the reader is working through a backlog (`ReplicationSource.behind`), on a real server: true
while a backlog committed before it was read is worked through, false once the reader has caught up. The
Ingestor lets a big org's backlog wait for the reader on this (pipeline/ingest.py, `read_first`)."""

from __future__ import annotations

from tests.integration.replication_support import SourceDb, skip_snapshot, streaming, take, wait_until

BACKLOG = 3  # transactions of 5,000 bookings each (more messages than one wakeup of the reader reads)


async def test_the_reader_knows_it_is_behind_until_it_has_read_the_backlog(source_db: SourceDb) -> None:
    # A queue of one transaction: the reader stops reading while it is full, so the backlog committed
    # meanwhile waits in the server and in libpq, as behind a slow consumer.
    async with streaming(source_db, queue_size=1) as (source, stream):
        await skip_snapshot(source, stream)
        assert not source.behind
        owner = source_db.add_user("005000000000001AAA")
        link = source_db.add_link(owner)
        await wait_until(lambda: source.stats.queue_depth == 1)
        for _ in range(BACKLOG):
            source_db.add_bookings(link, 5000)
        await take(stream, 2)  # the user and the link; the reader reads on
        seen = []
        for _ in range(BACKLOG):
            (txn,) = await take(stream, 1)
            assert len(txn.changes) == 5000
            seen.append(source.behind)
        assert seen[0], seen  # two transactions of 5,000 rows were still to come
        await wait_until(lambda: not source.behind, limit=10)
