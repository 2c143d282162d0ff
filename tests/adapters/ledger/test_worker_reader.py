"""The reader election of several workers (issue 14) on a real PostgreSQL ledger: of two workers in this
process exactly one reads the change stream; when its lock's session ends the other takes over, and the one
that lost the lock stops reading and goes on trying it as any other worker. A reader whose worker expired
(paused, or cut off) while its session lives has that session ended by another worker."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from bridge.ledger import upgrade_to_head
from bridge.ledger.lock import ADVISORY_KEY, InstanceLock
from bridge.ledger.repository import Ledger
from bridge.tenancy.reader import (
    WORKER_APPLICATION,
    ReaderElection,
    end_expired_sessions,
    end_slot_consumer,
    reader_lock_url,
    worker_session_url,
)

WAIT_SECONDS = 20.0


class Stream:
    """The ingest of one worker: counts its terms and whether one runs now."""

    def __init__(self) -> None:
        self.terms = 0
        self.running = False

    async def ingest(self, stop: asyncio.Event) -> None:
        self.terms += 1
        self.running = True
        try:
            await stop.wait()
        finally:
            self.running = False


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds (AssertionError naming `what` after WAIT_SECONDS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _lock_holder(dsn: str) -> int | None:
    """The backend pid holding the ledger's advisory lock, if any."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = %s",
                (ADVISORY_KEY,),
            )
            row = cur.fetchone()
        return int(row[0]) if row else None
    finally:
        conn.close()


def _terminate(dsn: str, pid: int) -> None:
    """End one backend's session, as PostgreSQL does for a worker that died."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        conn.close()


async def test_one_reader_and_the_other_takes_over_when_its_lock_session_ends(ledger_dsn: str) -> None:
    """Two workers: one reads. Its lock's session is ended: the other (trying every 0.1 s) reads within its
    next tries, and the first, checking its lock only every 2 s, finds it lost and stops reading, going on as
    a worker. Once the new reader stops, the first reads again."""
    first_stream, second_stream = Stream(), Stream()
    first = ReaderElection(InstanceLock(ledger_dsn), first_stream.ingest, try_seconds=0.1, check_seconds=2)
    second = ReaderElection(
        InstanceLock(ledger_dsn), second_stream.ingest, try_seconds=0.1, check_seconds=0.1
    )
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first_task = asyncio.create_task(first.run(stop_first))
    await _until(lambda: first.reading and first_stream.running, "the first worker to read")
    second_task = asyncio.create_task(second.run(stop_second))
    await asyncio.sleep(0.5)  # five tries of the second worker
    assert not second.reading and second_stream.terms == 0, "one reader at a time"

    holder = await asyncio.to_thread(_lock_holder, ledger_dsn)
    assert holder is not None
    await asyncio.to_thread(_terminate, ledger_dsn, holder)
    await _until(lambda: second.reading and second_stream.running, "the second worker to take over")
    await _until(lambda: not first.reading and not first_stream.running, "the first worker to stop reading")
    assert not first_task.done(), "the first worker goes on as a worker"

    stop_second.set()
    await second_task
    await _until(lambda: first.reading and first_stream.terms == 2, "the first worker to read again")
    assert second_stream.terms == 1
    stop_first.set()
    await first_task
    assert not first_stream.running
    assert await asyncio.to_thread(_lock_holder, ledger_dsn) is None, "the lock is released on stop"


async def test_a_reader_whose_worker_expired_has_its_lock_session_ended_by_another(ledger_dsn: str) -> None:
    """The reader's worker row expires (it stopped renewing: paused by the OS) while its lock session lives
    on: another worker, looking for an expired reader, ends that session and reads; the paused one, once it
    checks its lock, stops reading. A live reader's session is never ended."""
    upgrade_to_head(ledger_dsn)
    ledger = Ledger.from_url(ledger_dsn)
    try:
        await ledger.heartbeat("paused-1", "host", 1, reader=True, draining=False, lease_seconds=30)
        paused_stream, other_stream = Stream(), Stream()
        paused = ReaderElection(
            InstanceLock(reader_lock_url(ledger_dsn, "paused-1")), paused_stream.ingest, check_seconds=3600
        )
        stop_paused, stop_other = asyncio.Event(), asyncio.Event()
        paused_task = asyncio.create_task(paused.run(stop_paused))
        await _until(lambda: paused.reading, "the first worker to read")
        assert await asyncio.to_thread(end_expired_sessions, ledger_dsn) == [], "a live reader is left alone"

        other = ReaderElection(
            InstanceLock(reader_lock_url(ledger_dsn, "other-2")),
            other_stream.ingest,
            try_seconds=0.1,
            end_expired=functools.partial(end_expired_sessions, ledger_dsn),
            expired_check_seconds=0.1,
        )
        other_task = asyncio.create_task(other.run(stop_other))
        await asyncio.sleep(0.5)
        assert not other.reading, "the lock of a live reader is not taken"
        await ledger.heartbeat("paused-1", "host", 1, reader=True, draining=False, lease_seconds=-1)
        await _until(lambda: other.reading and other_stream.running, "the other worker to take over")
        assert paused.reading, "the paused reader has not checked its lock yet"
        stop_other.set()
        stop_paused.set()
        await asyncio.gather(other_task, paused_task)
        assert not paused_stream.running and paused_stream.terms == 1
    finally:
        ledger.dispose()


async def test_an_expired_workers_sessions_are_ended_freeing_a_lease_row_it_locked(ledger_dsn: str) -> None:
    """A worker paused in the middle of a fenced transaction holds its org's lease row FOR SHARE (the others'
    rounds skip it): once its lease expired, its named session is ended and the row is free; a live worker's
    session, in the same state, is not touched."""
    upgrade_to_head(ledger_dsn)
    ledger = Ledger.from_url(ledger_dsn)
    sessions: dict[str, Any] = {}
    try:
        for worker in ("paused-1", "live-2"):
            await ledger.heartbeat(worker, "host", 1, reader=False, draining=False, lease_seconds=30)
        await ledger.lease_round("paused-1", lease_seconds=30, draining=False)  # holds the default org
        for worker in ("paused-1", "live-2"):
            conn = psycopg2.connect(ledger_dsn, application_name=WORKER_APPLICATION + worker)
            with conn.cursor() as cur:  # a transaction left open, as a paused process leaves it
                cur.execute("SELECT org_id FROM org_leases FOR SHARE")
            sessions[worker] = conn
        await ledger.heartbeat("paused-1", "host", 1, reader=False, draining=False, lease_seconds=-1)

        assert "application_name=mb-worker%3Apaused-1" in worker_session_url(ledger_dsn, "paused-1")
        assert await asyncio.to_thread(end_expired_sessions, ledger_dsn) == ["paused-1"]
        with pytest.raises(psycopg2.Error), sessions["paused-1"].cursor() as cur:
            cur.execute("SELECT 1")
        with sessions["live-2"].cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        sessions["live-2"].rollback()
        assert await asyncio.to_thread(end_expired_sessions, ledger_dsn) == [], "nothing more to end"
    finally:
        for conn in sessions.values():
            conn.close()
        ledger.dispose()


def test_a_new_reader_ends_a_predecessors_replication_session(ledger_dsn: str) -> None:
    """A consumer still attached to the slot (a paused predecessor's walsender) is ended, its pid returned;
    with nobody attached nothing is ended."""
    from psycopg2.extras import LogicalReplicationConnection

    admin = psycopg2.connect(ledger_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_create_logical_replication_slot('w2_reader_slot', 'test_decoding')")
    consumer = psycopg2.connect(ledger_dsn, connection_factory=LogicalReplicationConnection)
    try:
        assert end_slot_consumer(ledger_dsn, "w2_reader_slot") is None, "nobody consumes it yet"
        with consumer.cursor() as repl:
            repl.start_replication(slot_name="w2_reader_slot", decode=True)
            pid = consumer.get_backend_pid()
            assert end_slot_consumer(ledger_dsn, "w2_reader_slot") == pid
    finally:
        consumer.close()
        with admin.cursor() as cur:
            for _ in range(100):
                cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'w2_reader_slot'")
                if not cur.fetchone()[0]:
                    break
                time.sleep(0.05)
            cur.execute("SELECT pg_drop_replication_slot('w2_reader_slot')")
        admin.close()
