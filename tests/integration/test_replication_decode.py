"""Decoding the live stream of a real server (PG15 and PG16): every operation, NULLs, TOAST, ALTER TABLE."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import psycopg2

from bridge.records.source import BookingRow, ChangeOp, LinkRow, SourceTable, UserRow
from tests.integration.replication_support import SourceDb, skip_snapshot, streaming, take

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
END = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


async def test_insert_update_delete_and_truncate_decode_to_typed_rows(source_db: SourceDb) -> None:
    """Each operation on each table arrives as one typed change per transaction, NULLs as None."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        owner = source_db.add_user("005000000000001AAA")
        link = source_db.add_link(owner, description=None, link_type="round_robin")
        booking = str(uuid.uuid4())
        source_db.run(
            "INSERT INTO scheduler.bookings"
            " (id, link_id, start_at, end_at, status, invitee_name, invitee_email)"
            " VALUES (%s, %s, %s, %s, 'scheduled', 'Ada Example', NULL)",
            (booking, link, START, END),
        )
        source_db.run("UPDATE scheduler.bookings SET status = 'cancelled', assigned_user_id = %s", (owner,))
        source_db.run("DELETE FROM scheduler.bookings WHERE id = %s", (booking,))
        source_db.run("TRUNCATE scheduler.bookings")
        txs = await take(stream, 6)
    rows = [(c.table, c.op, c.row) for tx in txs for c in tx.changes]
    assert rows == [
        (SourceTable.USERS, ChangeOp.INSERT, UserRow(id=owner, salesforce_user_id="005000000000001AAA")),
        (
            SourceTable.LINKS,
            ChangeOp.INSERT,
            LinkRow(
                id=link,
                link_type="round_robin",
                owner_id=owner,
                title="Intro call",
                description=None,
                duration_minutes=30,
                is_active=True,
            ),
        ),
        (
            SourceTable.BOOKINGS,
            ChangeOp.INSERT,
            BookingRow(id=booking, link_id=link, start_at=START, end_at=END, status="scheduled"),
        ),
        (
            SourceTable.BOOKINGS,
            ChangeOp.UPDATE,
            BookingRow(
                id=booking,
                link_id=link,
                assigned_user_id=owner,
                start_at=START,
                end_at=END,
                status="cancelled",
            ),
        ),
        (SourceTable.BOOKINGS, ChangeOp.DELETE, BookingRow(id=booking)),
        (SourceTable.BOOKINGS, ChangeOp.TRUNCATE, None),
    ]
    assert all(not tx.snapshot for tx in txs)
    assert [tx.end_lsn for tx in txs] == sorted({tx.end_lsn for tx in txs})
    assert len({tx.xid for tx in txs}) == 6


async def test_one_transaction_with_many_changes_and_an_origin(source_db: SourceDb) -> None:
    """A multi-statement transaction is one SourceTransaction in statement order, with its origin name;
    a transaction touching only an unpublished table is not yielded."""
    source_db.run("CREATE TABLE public.other (id int PRIMARY KEY)")
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        source_db.run("INSERT INTO public.other VALUES (1)")
        conn = psycopg2.connect(source_db.dsn)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_replication_origin_create('cdc_daemon_test')")
            cur.execute("SELECT pg_replication_origin_session_setup('cdc_daemon_test')")
            ids = [str(uuid.uuid4()) for _ in range(3)]
            for uid in ids:
                cur.execute(
                    "INSERT INTO scheduler.users (id, email, full_name)"
                    " VALUES (%s, 'x@example.invalid', 'X')",
                    (uid,),
                )
            cur.execute("UPDATE scheduler.users SET salesforce_user_id = '005' WHERE id = %s", (ids[0],))
        conn.close()
        (tx,) = await take(stream, 1)
    assert tx.origin == "cdc_daemon_test" and tx.xid > 0
    assert [(c.op, c.row.id if c.row else None) for c in tx.changes] == [
        (ChangeOp.INSERT, ids[0]),
        (ChangeOp.INSERT, ids[1]),
        (ChangeOp.INSERT, ids[2]),
        (ChangeOp.UPDATE, ids[0]),
    ]
    source_db.run("SELECT pg_replication_origin_drop('cdc_daemon_test')")


async def test_unchanged_toast_value_is_listed_not_nulled(source_db: SourceDb) -> None:
    """Updating another column of a link with a > 8 kB description lists description as unchanged."""
    big = secrets.token_hex(10_000)  # incompressible enough to be stored out of line
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        owner = source_db.add_user()
        link = source_db.add_link(owner, description=big)
        source_db.run("UPDATE scheduler.scheduling_links SET title = 'Renamed' WHERE id = %s", (link,))
        source_db.run("UPDATE scheduler.scheduling_links SET description = 'short' WHERE id = %s", (link,))
        _, inserted, renamed, redescribed = await take(stream, 4)
    first = inserted.changes[0].row
    assert isinstance(first, LinkRow) and first.description == big and first.unchanged == frozenset()
    row = renamed.changes[0].row
    assert isinstance(row, LinkRow) and row.title == "Renamed"
    assert row.unchanged == {"description"} and row.description is None and row.problems == ()
    last = redescribed.changes[0].row
    assert isinstance(last, LinkRow) and last.description == "short" and last.unchanged == frozenset()


async def test_altered_table_mid_stream_keeps_decoding_and_bad_values_do_not_stop_it(
    source_db: SourceDb,
) -> None:
    """ADD COLUMN mid-stream is followed; a column retyped to text holding a bad value gives a row with
    a problem, and the next transaction decodes normally."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        owner = source_db.add_user()
        source_db.run("ALTER TABLE scheduler.users ADD COLUMN nickname text")
        source_db.run(
            "INSERT INTO scheduler.users (id, email, full_name, nickname, salesforce_user_id)"
            " VALUES (%s, 'y@example.invalid', 'Y', 'nick', '005B')",
            (second := str(uuid.uuid4()),),
        )
        source_db.run("ALTER TABLE scheduler.scheduling_links ALTER COLUMN duration_minutes TYPE text")
        bad = source_db.add_link(owner)
        source_db.run(
            "UPDATE scheduler.scheduling_links SET duration_minutes = 'half an hour' WHERE id = %s", (bad,)
        )
        good = source_db.add_link(owner)
        txs = await take(stream, 5)
    rows = [tx.changes[0].row for tx in txs]
    assert rows[0] == UserRow(id=owner) and rows[1] == UserRow(id=second, salesforce_user_id="005B")
    assert isinstance(rows[2], LinkRow) and rows[2].duration_minutes == 30 and rows[2].problems == ()
    broken = rows[3]
    assert isinstance(broken, LinkRow) and broken.id == bad and broken.duration_minutes is None
    assert broken.title == "Intro call" and len(broken.problems) == 1
    assert broken.problems[0].startswith("scheduling_links.duration_minutes:")
    assert isinstance(rows[4], LinkRow) and rows[4].id == good and rows[4].problems == ()


async def test_primary_key_change_arrives_as_delete_then_insert(source_db: SourceDb) -> None:
    """Changing a row's id on the server yields a DELETE of the old id and an INSERT of the new one."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        old = source_db.add_user("005K")
        new = str(uuid.uuid4())
        source_db.run("UPDATE scheduler.users SET id = %s WHERE id = %s", (new, old))
        _, tx = await take(stream, 2)
    assert [(c.op, c.row) for c in tx.changes] == [
        (ChangeOp.DELETE, UserRow(id=old)),
        (ChangeOp.INSERT, UserRow(id=new, salesforce_user_id="005K")),
    ]


async def test_a_twenty_thousand_row_transaction_arrives_whole(source_db: SourceDb) -> None:
    """One large transaction is one SourceTransaction holding every row, in insert order."""
    async with streaming(source_db) as (source, stream):
        await skip_snapshot(source, stream)
        source_db.run(
            "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id)"
            " SELECT gen_random_uuid(), 'bulk@example.invalid', 'Bulk', 'n' || i"
            " FROM generate_series(1, 20000) i"
        )
        (tx,) = await take(stream, 1)
    assert len(tx.changes) == 20_000
    assert [c.row.salesforce_user_id for c in tx.changes[:3]] == ["n1", "n2", "n3"]  # type: ignore[union-attr]
    assert all(c.op is ChangeOp.INSERT and c.row and not c.row.problems for c in tx.changes)
