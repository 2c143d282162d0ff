"""The reader among several workers (issue 14): exactly one worker reads the change stream at a time.

`ReaderElection` runs the change stream's ingest only while this worker holds the ledger's advisory lock
(bridge/ledger/lock.py); the lock dies with its session, so another worker takes over when the reader dies.
A reader that loses the lock stops ingesting and goes on as a worker, trying the lock like every other one.
A reader paused by the OS or cut off keeps its session, and so the lock: its lock session carries the worker's
id (`application_name`, as do the worker's other ledger sessions), and once that worker's row has expired in
`workers` another worker ends its sessions (`pg_terminate_backend`, `end_expired_sessions`, which every worker
runs now and then) and takes the lock; a lease row locked by a paused fenced transaction is freed the same
way. `ReaderView` is the admin probe's view of the stream as this worker reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.aio import sleep_or_stop
from bridge.errors import FatalError, LedgerUnavailable

if TYPE_CHECKING:
    from bridge.ledger.lock import LockHealth
    from bridge.source.reader import SourceStats

log = structlog.get_logger(__name__)

READER_TRY_SECONDS = 1.0  # how often a worker that is not the reader tries the lock
READER_CHECK_SECONDS = 1.0  # how often the reader checks that its lock is still its own
EXPIRED_READER_CHECK_SECONDS = 5.0  # how often a worker that is not the reader looks for an expired one
READER_APPLICATION = "mb-reader:"  # application_name prefix of the reader lock's session
WORKER_APPLICATION = "mb-worker:"  # application_name prefix of a worker's other ledger sessions
APPLICATION_NAME_BYTES = 63  # PostgreSQL cuts application_name to NAMEDATALEN - 1


def reader_lock_url(url: str, worker_id: str) -> str:
    """The ledger URL of the reader lock's connection: its session named after the worker, so that the
    others can tell whose session holds the lock."""
    return _named_url(url, READER_APPLICATION + worker_id)


def worker_session_url(url: str, worker_id: str) -> str:
    """The ledger URL of a worker's other ledger connections, named after it likewise: a worker paused in the
    middle of a fenced transaction holds its org's lease row until its session ends."""
    return _named_url(url, WORKER_APPLICATION + worker_id)


def _named_url(url: str, name: str) -> str:
    from bridge.ledger.engine import normalise_url

    cut = name.encode()[:APPLICATION_NAME_BYTES].decode(errors="ignore")
    return (
        normalise_url(url).update_query_dict({"application_name": cut}).render_as_string(hide_password=False)
    )


_EXPIRED_SESSIONS = """
SELECT a.pid, w.worker_id, pg_terminate_backend(a.pid) AS ended
FROM pg_stat_activity a
JOIN workers w ON a.application_name IN (
    left(:reader || w.worker_id, :name_bytes), left(:worker || w.worker_id, :name_bytes)
)
WHERE w.lease_until < now() AND a.pid <> pg_backend_pid()
"""


def end_expired_sessions(url: str) -> list[str]:
    """End the ledger sessions of workers whose lease has expired in `workers`: a worker paused by the OS or
    cut off keeps its sessions alive, and with them the reader lock (if it read the stream) and any lease row
    a fenced transaction of it had locked, which the others' rounds skip. PostgreSQL then releases both; the
    worker, should it wake, reconnects and finds its leases gone. The ids of the workers whose sessions
    were ended (once per session)."""
    import sqlalchemy as sa

    from bridge.ledger.engine import normalise_url

    engine = sa.create_engine(normalise_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(_EXPIRED_SESSIONS),
                {
                    "reader": READER_APPLICATION,
                    "worker": WORKER_APPLICATION,
                    "name_bytes": APPLICATION_NAME_BYTES,
                },
            ).all()
    finally:
        engine.dispose()
    return [str(row.worker_id) for row in rows if row.ended]


async def end_expired_sessions_now_and_then(
    end_expired: Callable[[], list[str]], stop: asyncio.Event, every: float = EXPIRED_READER_CHECK_SECONDS
) -> None:
    """A component of every worker: `end_expired` every `every` seconds until stop (the reader too: the
    stuck lease row may be any org's)."""
    from sqlalchemy.exc import DBAPIError

    while not await sleep_or_stop(stop, every):
        try:
            ended = await asyncio.to_thread(end_expired)
        except DBAPIError as exc:
            log.warning("workers.expired_sessions_check_failed", error=type(exc.orig or exc).__name__)
            continue
        for worker_id in sorted(set(ended)):
            log.warning(
                "workers.expired_sessions_ended", expired_worker=worker_id, sessions=ended.count(worker_id)
            )


def end_slot_consumer(dsn: str, slot: str) -> int | None:
    """End the session consuming the replication slot, if any; its pid. Called by a newly elected reader: by
    the protocol no other worker consumes the slot, so a consumer is a predecessor paused or cut off, whose
    walsender would otherwise hold the slot until `wal_sender_timeout` (the new reader's retries meanwhile
    find it 'active')."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (slot,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row is not None and row[1] else None


class ReaderLock(Protocol):
    """The ledger's advisory lock (bridge.ledger.lock.InstanceLock); blocking calls, run in a thread."""

    def try_acquire(self) -> bool:
        """Take the lock if free; never blocks."""
        ...

    def verify(self) -> LockHealth:
        """Whether the lock is still this process's."""
        ...

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        ...


Ingest = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class ReaderElection:
    """Ingest the change stream only while this worker holds the lock; a reader that loses it stops ingesting
    and goes on as a worker (it tries again every READER_TRY_SECONDS, like every other worker)."""

    def __init__(
        self,
        lock: ReaderLock,
        ingest: Ingest,
        *,
        try_seconds: float = READER_TRY_SECONDS,
        check_seconds: float = READER_CHECK_SECONDS,
        end_expired: Callable[[], list[str]] | None = None,
        expired_check_seconds: float = EXPIRED_READER_CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = lock
        self._ingest = ingest  # one term of ingest: a fresh source from the stored position, until its stop
        self._try_seconds = try_seconds
        self._check_seconds = check_seconds
        self._end_expired = end_expired  # ends an expired reader's lock session (end_expired_sessions)
        self._expired_check_seconds = expired_check_seconds
        self._monotonic = monotonic
        self._next_expired_check = float("-inf")
        self.reading = False
        self.terms = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Try the lock until stop; read the stream while it is held."""
        try:
            while not stop.is_set():
                if await self._try_lock():
                    try:
                        await self._term(stop)
                    except LedgerUnavailable as exc:  # e.g. its stored position could not be read
                        log.warning("workers.reader_ledger_unavailable", error=str(exc))
                        await asyncio.to_thread(self._lock.release)  # another worker may read meanwhile
                else:
                    await self._end_expired_reader()
                if await sleep_or_stop(stop, self._try_seconds):
                    return
        finally:
            await asyncio.to_thread(self._lock.release)

    async def _try_lock(self) -> bool:
        """One try of the lock; an unreachable ledger is a 'no' (nobody else can take it either)."""
        from sqlalchemy.exc import DBAPIError

        try:
            return await asyncio.to_thread(self._lock.try_acquire)
        except DBAPIError as exc:
            log.warning("workers.reader_lock_unreachable", error=type(exc.orig or exc).__name__)
            return False

    async def _end_expired_reader(self) -> None:
        """Now and then: end the lock session of a reader whose worker expired (paused, or cut off)."""
        from sqlalchemy.exc import DBAPIError

        if self._end_expired is None or self._monotonic() < self._next_expired_check:
            return
        self._next_expired_check = self._monotonic() + self._expired_check_seconds
        try:
            ended = await asyncio.to_thread(self._end_expired)
        except DBAPIError as exc:
            log.warning("workers.expired_reader_check_failed", error=type(exc.orig or exc).__name__)
            return
        for worker_id in ended:
            log.warning("workers.expired_reader_ended", expired_worker=worker_id)

    async def _term(self, stop: asyncio.Event) -> None:
        """Read until stop or until the lock is no longer this worker's."""
        from bridge.ledger.lock import LockHealth

        self.terms += 1
        self.reading = True
        log.info("workers.reader_elected", term=self.terms)
        term_stop = asyncio.Event()
        task = asyncio.create_task(self._ingest(term_stop), name="reader.ingest")
        lost: LockHealth | None = None
        stopped = asyncio.create_task(stop.wait(), name="reader.stop")
        try:
            while not task.done() and not stop.is_set():
                await asyncio.wait(
                    [task, stopped], timeout=self._check_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if task.done() or stop.is_set():
                    break
                health = await asyncio.to_thread(self._lock.verify)
                if health is not LockHealth.HELD:
                    lost = health
                    break
        finally:
            stopped.cancel()
            ended_by_itself = task.done()
            term_stop.set()
            try:
                await task
            finally:
                self.reading = False
        if lost is not None:
            log.warning("workers.reader_lost", term=self.terms, lock=lost.value)
            await asyncio.to_thread(self._lock.release)
        elif ended_by_itself and not stop.is_set():
            raise FatalError("the change stream's ingest ended unexpectedly")


class ReaderView:
    """The admin probe's view of the change stream as this worker reads it: the current term's source and
    ingestor while it is the reader, a stream not connected here otherwise."""

    def __init__(self) -> None:
        self.source: SourceLike | None = None
        self.ingestor: IngestorLike | None = None

    def reading(self, source: SourceLike | None, ingestor: IngestorLike | None) -> None:
        """A term began (both given) or ended (both None)."""
        self.source, self.ingestor = source, ingestor

    @property
    def stats(self) -> SourceStats:
        """The current term's counters; not connected while another worker reads."""
        from bridge.source.reader import SourceStats

        if self.source is not None:
            return self.source.stats
        return SourceStats(
            connected=False,
            last_received_lsn=0,
            acked_lsn=0,
            reconnects=0,
            last_commit_time=None,
            queue_depth=0,
            paused=False,
        )

    @property
    def applied_lsn(self) -> int | None:
        """The newest LSN this worker's ingest applied in its current term."""
        return self.ingestor.applied_lsn if self.ingestor is not None else None

    @property
    def last_commit_time(self) -> datetime | None:
        """The commit time of the newest transaction applied in the current term."""
        return self.ingestor.last_commit_time if self.ingestor is not None else None


class SourceLike(Protocol):
    """A replication source's counters (bridge.source.reader.ReplicationSource)."""

    @property
    def stats(self) -> SourceStats:
        """Current counters."""
        ...


class IngestorLike(Protocol):
    """The ingest's progress (bridge.pipeline.ingest.Ingestor)."""

    applied_lsn: int | None
    last_commit_time: datetime | None
