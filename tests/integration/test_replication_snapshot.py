"""First start: rows read from the slot's exported snapshot, then the stream, with no gap and no double."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid

import psycopg2

from bridge.records.source import ChangeOp, SourceTable, SourceTransaction, UserRow
from bridge.source.setup import ensure_slot
from tests.integration.replication_support import SourceDb, streaming, take, wait_until

SEED_USERS = 2500


def seed_users(db: SourceDb, count: int) -> None:
    db.run(
        "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id)"
        " SELECT gen_random_uuid(), 'seed@example.invalid', 'Seed', 'v0' FROM generate_series(1, %s)",
        (count,),
    )


def churn(dsn: str, stop: threading.Event, started: threading.Event) -> None:
    """Random single-statement inserts, updates and deletes of users until stopped."""
    rng = random.Random(7)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        n = 0
        while not stop.is_set():
            n += 1
            roll = rng.random()
            if roll < 0.4:
                cur.execute(
                    "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id)"
                    " VALUES (%s, 'w@example.invalid', 'W', %s)",
                    (str(uuid.uuid4()), f"v{n}"),
                )
            elif roll < 0.8:
                cur.execute(
                    "UPDATE scheduler.users SET salesforce_user_id = %s"
                    " WHERE id = (SELECT id FROM scheduler.users ORDER BY random() LIMIT 1)",
                    (f"v{n}",),
                )
            else:
                cur.execute("DELETE FROM scheduler.users WHERE id = (SELECT id FROM scheduler.users LIMIT 1)")
            if n == 50:
                started.set()
    conn.close()


def apply(state: dict[str, str | None], tx: SourceTransaction, anomalies: list[str]) -> None:
    """Replay one streamed transaction onto the mirrored table, recording doubles and gaps."""
    for change in tx.changes:
        row = change.row
        assert isinstance(row, UserRow) and change.table is SourceTable.USERS
        if change.op is ChangeOp.INSERT:
            if row.id in state:
                anomalies.append(f"double insert {row.id}")
            state[row.id] = row.salesforce_user_id
        elif change.op is ChangeOp.UPDATE:
            if row.id not in state:
                anomalies.append(f"update of unknown {row.id}")
            state[row.id] = row.salesforce_user_id
        else:
            if state.pop(row.id, "missing") == "missing":
                anomalies.append(f"delete of unknown {row.id}")


async def test_snapshot_then_stream_under_concurrent_writes_has_no_gap_and_no_double(
    source_db: SourceDb,
) -> None:
    """Snapshot chunks (<= 1000 rows, users first) plus the stream replay to exactly the final table while a
    writer inserts, updates and deletes throughout the hand-off."""
    seed_users(source_db, SEED_USERS)
    stop, started = threading.Event(), threading.Event()
    writer = threading.Thread(target=churn, args=(source_db.dsn, stop, started))
    writer.start()
    state: dict[str, str | None] = {}
    anomalies: list[str] = []
    streamed = 0
    try:
        await asyncio.to_thread(started.wait, 30)
        async with streaming(source_db, queue_size=4) as (source, stream):
            chunks = []
            while not chunks or not chunks[-1].last_snapshot_chunk:
                chunks.extend(await take(stream, 1))
            for chunk in chunks:
                for change in chunk.changes:
                    assert isinstance(change.row, UserRow) and change.op is ChangeOp.INSERT
                    if change.row.id in state:
                        anomalies.append(f"double in snapshot {change.row.id}")
                    state[change.row.id] = change.row.salesforce_user_id
            consistent = chunks[0].end_lsn
            source.acknowledge(consistent)
            await asyncio.sleep(0.3)  # let the writer run on past the hand-off
            stop.set()
            await asyncio.to_thread(writer.join)
            marker = source_db.add_user("marker")
            while marker not in state:
                (tx,) = await take(stream, 1)
                assert not tx.snapshot and tx.end_lsn > consistent
                apply(state, tx, anomalies)
                source.acknowledge(tx.end_lsn)
                streamed += 1
    finally:
        stop.set()
        writer.join()
    table = dict(source_db.run("SELECT id::text, salesforce_user_id FROM scheduler.users"))
    assert anomalies == []
    assert state == table
    assert streamed > 10  # the writer really ran across the hand-off
    assert all(c.snapshot and c.end_lsn == consistent for c in chunks)
    assert [c.last_snapshot_chunk for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(0 < len(c.changes) <= 1000 for c in chunks)
    assert sum(len(c.changes) for c in chunks) >= SEED_USERS * 0.8


async def test_snapshot_reads_tables_in_order_and_replaces_a_stale_slot(source_db: SourceDb) -> None:
    """With no checkpoint an existing slot is dropped and recreated; users, links, bookings come in that
    order, personal data is not carried, and the stream starts after the snapshot."""
    ensure_slot(source_db.dsn, source_db.settings.slot)
    source_db.add_user()  # would be streamed from the stale slot; must appear once, via the snapshot
    owner = source_db.add_user("005A")
    link = source_db.add_link(owner)
    source_db.run(
        "INSERT INTO scheduler.bookings (id, link_id, start_at, end_at, status, invitee_name)"
        " VALUES (gen_random_uuid(), %s, now(), now() + interval '30 minutes', 'scheduled', 'Ada Example')",
        (link,),
    )
    async with streaming(source_db) as (source, stream):
        (chunk_users, chunk_links, chunk_bookings) = await take(stream, 3)
        source.acknowledge(chunk_bookings.end_lsn)
        later = source_db.add_user()
        (tx,) = await take(stream, 1)
    assert [c.changes[0].table for c in (chunk_users, chunk_links, chunk_bookings)] == [
        SourceTable.USERS,
        SourceTable.LINKS,
        SourceTable.BOOKINGS,
    ]
    assert len(chunk_users.changes) == 2 and chunk_bookings.last_snapshot_chunk
    assert "Ada" not in repr(chunk_bookings)
    assert tx.changes[0].row == UserRow(id=later) and not tx.snapshot


async def test_a_snapshot_broken_midway_is_taken_again_from_the_start(source_db: SourceDb) -> None:
    """If the snapshot reader's connection dies between chunks, the slot is recreated and the whole
    snapshot read again (new consistent point); the final attempt is complete and streaming follows."""
    seed_users(source_db, 5000)  # five chunks: the reader is still inside the snapshot while we stall
    async with streaming(source_db, queue_size=1) as (source, stream):
        chunks: list[SourceTransaction] = await take(stream, 1)

        def reader_waiting() -> bool:
            return bool(
                source_db.run(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state = 'idle in transaction' AND backend_type = 'client backend'"
                )
            )

        await wait_until(reader_waiting)  # blocked on the full queue between chunks
        source_db.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'idle in transaction' AND backend_type = 'client backend'"
        )
        while not chunks[-1].last_snapshot_chunk:
            chunks.extend(await take(stream, 1))
        final = [c for c in chunks if c.end_lsn == chunks[-1].end_lsn]
        source.acknowledge(chunks[-1].end_lsn)
        later = source_db.add_user()
        (tx,) = await take(stream, 1)
        assert source.stats.reconnects >= 1
    assert len({c.end_lsn for c in chunks}) == 2  # two attempts, two consistent points
    assert sum(len(c.changes) for c in final) == 5000
    assert tx.changes[0].row == UserRow(id=later)


async def test_a_stop_while_the_slot_waits_for_a_running_transaction_is_prompt(source_db: SourceDb) -> None:
    """Creating the slot waits for every transaction running when it began. A daemon stopped meanwhile
    (SIGTERM during a first start, while the scheduler commits) must not wait for them: closing the source
    cancels the slot's creation, and no half-made slot is left behind."""
    open_txn = psycopg2.connect(source_db.dsn)  # a writer that has not committed yet
    try:
        with open_txn.cursor() as cur:
            cur.execute(
                "INSERT INTO scheduler.users (id, email, full_name) VALUES (%s, 'w@example.invalid', 'W')",
                (str(uuid.uuid4()),),
            )
        async with streaming(source_db) as (source, stream):
            first = asyncio.create_task(anext(stream))  # connects and starts creating the slot
            await wait_until(
                lambda: bool(
                    source_db.run(
                        "SELECT 1 FROM pg_stat_activity"
                        " WHERE state = 'active' AND query LIKE 'CREATE_REPLICATION_SLOT%%'"
                    )
                )
            )
            await asyncio.wait_for(source.close(), 10)  # not until the writer commits
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        assert open_txn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        assert not source_db.run(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (source_db.settings.slot,)
        )
    finally:
        open_txn.rollback()
        open_txn.close()
