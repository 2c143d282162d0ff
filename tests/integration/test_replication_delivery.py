"""Delivery guarantees of the reader: acknowledgements, redelivery, reconnects, fatal slot loss, idle WAL,
backpressure, and an event loop that keeps running."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import FatalError
from bridge.records.source import UserRow
from bridge.source.setup import drop_slot
from tests.integration.replication_support import SourceDb, skip_snapshot, streaming, take, wait_until


def user_ids(txs: list) -> list[str]:  # type: ignore[type-arg]
    """The row ids of every change of the transactions, in order."""
    return [c.row.id for tx in txs for c in tx.changes]


def active_pid(db: SourceDb) -> int | None:
    """The pid of the walsender currently holding the test's slot."""
    rows = db.run("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (db.settings.slot,))
    return rows[0][0] if rows else None


async def test_acknowledged_transactions_are_not_redelivered_and_unacked_ones_are(
    source_db: SourceDb,
) -> None:
    """After a restart the stream resumes right after the acknowledged transaction; unacknowledged ones
    come again; a checkpoint ahead of the slot skips what the ledger already holds."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        ids = [source_db.add_user() for _ in range(3)]
        t1, t2, t3 = await take(stream, 3)
        assert user_ids([t1, t2, t3]) == ids
        source.acknowledge(t1.end_lsn)
        await wait_until(lambda: source_db.confirmed_flush() >= t1.end_lsn)
        assert source.stats.acked_lsn == t1.end_lsn
    assert source_db.confirmed_flush() == t1.end_lsn  # never past what was acknowledged
    async with streaming(source_db, resume_lsn=t1.end_lsn) as (source, stream):
        again = await take(stream, 2)  # not acknowledged: delivered again
    assert [tx.end_lsn for tx in again] == [t2.end_lsn, t3.end_lsn]
    async with streaming(source_db, resume_lsn=t2.end_lsn) as (source, stream):
        (only,) = await take(stream, 1)  # the ledger's checkpoint is ahead of the slot
        assert only.end_lsn == t3.end_lsn
        newer = source_db.add_user()
        (tx,) = await take(stream, 1)
    assert user_ids([tx]) == [newer]


async def test_reconnects_after_walsender_is_terminated_without_duplicates(source_db: SourceDb) -> None:
    """Killing the walsender makes the reader reconnect with backoff; a transaction already handed over
    (even unacknowledged) is not yielded twice in the same process, and later ones still arrive."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        first = source_db.add_user()
        (t1,) = await take(stream, 1)
        source_db.run(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
            (source_db.settings.slot,),
        )
        await wait_until(lambda: source.stats.reconnects >= 1)
        second = source_db.add_user()
        (t2,) = await take(stream, 1)
        source.acknowledge(t2.end_lsn)
        await wait_until(lambda: source_db.confirmed_flush() >= t2.end_lsn)
        stats = source.stats
    assert user_ids([t1, t2]) == [first, second]
    assert stats.connected and stats.reconnects >= 1 and stats.last_received_lsn >= t2.end_lsn


async def test_missing_slot_with_a_checkpoint_is_fatal(source_db: SourceDb) -> None:
    """A checkpoint without its slot raises FatalError saying changes may be lost and how to recover."""
    async with streaming(source_db, resume_lsn=0x1000) as (_source, stream):
        with pytest.raises(FatalError) as info:
            await take(stream, 1)
    message = str(info.value)
    assert source_db.settings.slot in message and "may have been lost" in message
    assert "mogli-bridge setup --reset-source" in message and "mogli-bridge reconcile" in message
    slots = source_db.run(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (source_db.settings.slot,)
    )
    assert slots == []  # never recreated silently


async def test_slot_dropped_while_streaming_is_fatal(source_db: SourceDb) -> None:
    """If the slot disappears under a running reader, the reconnect fails fatally instead of looping."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        source_db.run(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
            (source_db.settings.slot,),
        )
        await asyncio.to_thread(drop_slot, source_db.dsn, source_db.settings.slot)
        with pytest.raises(FatalError, match="reset-source"):
            await take(stream, 1)


async def test_idle_slot_follows_unpublished_writes(source_db: SourceDb) -> None:
    """With everything acknowledged, writes to tables outside the publication still move the slot's
    confirmed_flush_lsn, so a quiet scheduler does not pin WAL."""
    source_db.run("CREATE TABLE public.churn (id serial PRIMARY KEY, v text)")
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        start = source_db.confirmed_flush()
        for _ in range(20):
            source_db.run("INSERT INTO public.churn (v) SELECT repeat('x', 1000) FROM generate_series(1, 50)")
        target = int(source_db.run("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
        await wait_until(lambda: source_db.confirmed_flush() >= target)
        assert source.stats.queue_depth == 0
    assert source_db.confirmed_flush() > start


async def test_backpressure_pauses_reading_and_the_loop_keeps_running(source_db: SourceDb) -> None:
    """A stalled consumer fills the bounded queue and pauses reading (no unbounded buffer) while other
    coroutines keep running; once it consumes, every transaction arrives once and in order."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with streaming(source_db, queue_size=4) as (source, stream):
        await skip_snapshot(source, stream)
        source_db.run(
            "DO $$ BEGIN FOR i IN 1..200 LOOP"
            " INSERT INTO scheduler.users (id, email, full_name)"
            " SELECT gen_random_uuid(), 'b@example.invalid', 'B' FROM generate_series(1, 100);"
            " COMMIT; END LOOP; END $$"
        )
        tick_task = asyncio.create_task(ticker())
        try:
            await wait_until(lambda: source.stats.paused)
            assert source.stats.queue_depth == 4  # bounded: the reader stopped at the limit
            seen_ticks = []
            txs = []
            for _ in range(200):
                txs.extend(await take(stream, 1))
                seen_ticks.append(ticks)
                await asyncio.sleep(0)
        finally:
            tick_task.cancel()
    assert sum(len(tx.changes) for tx in txs) == 20_000
    assert all(isinstance(c.row, UserRow) for tx in txs for c in tx.changes)
    assert [tx.end_lsn for tx in txs] == sorted({tx.end_lsn for tx in txs})
    assert len(set(seen_ticks)) > 100  # the ticker ran between transactions throughout the stream


async def test_missing_publication_is_fatal_and_names_the_fix(source_db: SourceDb) -> None:
    """A publication that does not exist stops the reader with a message pointing at `mogli-bridge setup`."""
    async with streaming(source_db, publication="nopub") as (source, stream):
        await skip_snapshot(source, stream)
        source_db.add_user()
        with pytest.raises(FatalError, match=r'publication "nopub" does not exist: run `mogli-bridge setup`'):
            await take(stream, 1)


async def test_resumes_after_a_server_restart(source_db: SourceDb) -> None:
    """A server restart breaks the connection; the reader retries until the server is back and resumes
    after the acknowledged transaction without losing the one committed meanwhile."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        first = source_db.add_user()
        (t1,) = await take(stream, 1)
        source.acknowledge(t1.end_lsn)
        await wait_until(lambda: source_db.confirmed_flush() >= t1.end_lsn)
        await asyncio.to_thread(source_db.cluster.restart, "fast")
        second = source_db.add_user()
        (t2,) = await take(stream, 1)
        assert source.stats.reconnects >= 1
    assert user_ids([t1, t2]) == [first, second]


async def test_close_ends_a_waiting_consumer_and_is_idempotent(source_db: SourceDb) -> None:
    """close() ends the iteration of a consumer that is waiting for the next transaction; a second
    close() does nothing; the walsender lets go of the slot."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        waiting = asyncio.create_task(anext(stream))  # type: ignore[arg-type]
        await wait_until(lambda: source.stats.connected)
        await source.close()
        with pytest.raises(StopAsyncIteration):
            await waiting
        await source.close()
        assert source.stats.connected is False

    def released() -> bool:
        rows = source_db.run(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (source_db.settings.slot,)
        )
        return rows == [(False,)]

    await wait_until(released)


async def test_a_stalled_consumer_outlives_wal_sender_timeout(source_db: SourceDb) -> None:
    """With wal_sender_timeout=1s, a consumer stalled for 3 s behind a full queue keeps its connection:
    the status timer keeps answering the server while reading is paused."""
    dsn = f"{source_db.dsn}?options=-c%20wal_sender_timeout%3D1s"
    async with streaming(source_db, dsn=dsn, queue_size=2) as (source, stream):
        await skip_snapshot(source, stream)
        ids = [source_db.add_user() for _ in range(10)]
        await wait_until(lambda: source.stats.paused)
        walsender = active_pid(source_db)
        await asyncio.sleep(3)  # the stall; nothing is asserted about time
        txs = await take(stream, 10)
        ids.append(source_db.add_user())
        txs += await take(stream, 1)
        assert active_pid(source_db) == walsender and source.stats.reconnects == 0
    assert user_ids(txs) == ids


async def test_reconnect_never_confirms_a_transaction_the_ledger_has_not_acknowledged(
    source_db: SourceDb,
) -> None:
    """After a reconnect, keepalives must not move the slot past a transaction that was handed over but
    not acknowledged: a crash now must still get it re-sent."""
    async with streaming(source_db) as (source, stream):
        consistent = await skip_snapshot(source, stream)
        await wait_until(lambda: source_db.confirmed_flush() >= consistent)
        source_db.add_user()
        (t1,) = await take(stream, 1)  # handed over, never acknowledged
        walsender = active_pid(source_db)
        source_db.run("SELECT pg_terminate_backend(%s)", (walsender,))
        await wait_until(lambda: active_pid(source_db) not in (None, walsender))
        source_db.run("CREATE TABLE public.noise (id int)")  # WAL the walsender decodes and keeps alive over
        source_db.run("INSERT INTO public.noise SELECT generate_series(1, 1000)")
        await asyncio.sleep(1.5)  # several status intervals and keepalives; nothing is asserted about time
        assert source_db.confirmed_flush() < t1.end_lsn
    async with streaming(source_db, resume_lsn=consistent) as (source, stream):
        (again,) = await take(stream, 1)
    assert again.end_lsn == t1.end_lsn
