"""The replication reader: pgoutput over psycopg2's LogicalReplicationConnection, inside the event loop.

Shape (see ../shared/reference/postgres-cdc.md for the measurements behind it):
- Connecting, slot creation and START_REPLICATION are blocking libpq calls and run in a thread.
- `read_message()` never blocks; it is driven by `loop.add_reader` on the connection's socket and drains
  whatever libpq has buffered. Whole transactions go into a bounded queue; when it fills, the reader is
  removed (the walsender then blocks on a full socket) and re-added once the consumer has taken half.
- A status timer sends `flush_lsn = acknowledged LSN` every `status_interval_seconds`, also while paused,
  so `wal_sender_timeout` never fires on a slow consumer. Only Commit end LSNs are ever acknowledged.
- Idle WAL: psycopg2 moves its flush position to the keepalive's wal_end once everything it delivered has
  been acknowledged, and transactions with no change for us (commits on unpublished tables, PG < 15 sends
  them empty) are acknowledged here as soon as everything before them is. Together these keep the slot's
  confirmed_flush_lsn moving on a database whose scheduler tables are idle (an integration test proves it),
  so `heartbeat_seconds` is deliberately unused: an emitted `pg_logical_emit_message` heartbeat would need
  one more connection and only re-solve what the keepalives already solve.
- Reconnect on connection errors with capped exponential backoff and jitter, rebuilding the relation
  cache. START_REPLICATION starts at the acknowledged LSN (or the ledger's checkpoint), never at the last
  transaction queued: psycopg2 confirms a keepalive's wal_end whenever nothing it received in the session
  is unacknowledged, so skipping queued-but-unacknowledged transactions would let the slot move past them
  (a test proves this). The server therefore re-sends them, and they are dropped by end LSN, so within one
  process no transaction is yielded twice. After a process restart the server re-sends what was not
  acknowledged, and the ledger dedupes it by LSN.
- First start (no checkpoint): the slot is created with EXPORT_SNAPSHOT and the tables are read in that
  snapshot before START_REPLICATION. If that fails midway, the slot is dropped and the snapshot taken again
  from the start, so some snapshot rows may be yielded twice (the ledger upserts them).
- Fatal (raised to the consumer): a missing or invalidated slot, a missing publication, a protocol
  violation. Everything else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import structlog
from psycopg2 import sql

from bridge.aio import Interrupted, next_or_stop
from bridge.config import SourceSettings
from bridge.errors import FatalError
from bridge.records.source import SourceTransaction, format_lsn, parse_lsn
from bridge.source.assembly import TransactionAssembler
from bridge.source.pgoutput import ProtocolError, decode
from bridge.source.setup import drop_slot, slot_exists
from bridge.source.snapshot import SnapshotReader
from bridge.source.target import SourceTarget, failure_reason
from bridge.source.values import session_options

log = structlog.get_logger(__name__)

RECOVERY = (
    "run `mogli-bridge setup --reset-source` to create a new slot and re-read the tables, "
    "then `mogli-bridge reconcile`"
)
BACKOFF_BASE_SECONDS = 0.25
MESSAGES_PER_WAKEUP = 2000  # bounds the time one reader callback holds the event loop


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A snapshot of the reader's progress, for /readyz and metrics."""

    connected: bool
    last_received_lsn: int
    acked_lsn: int
    reconnects: int
    last_commit_time: datetime | None
    queue_depth: int
    paused: bool


_Item = SourceTransaction | BaseException


def _missing_slot(slot: str) -> FatalError:
    return FatalError(
        f"replication slot {slot} is gone, so changes made since it was dropped may have been lost; "
        f"{RECOVERY}"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _fatal_cause(exc: BaseException, slot: str) -> FatalError | None:
    """The FatalError an exception stands for, or None when reconnecting may help."""
    if isinstance(exc, FatalError):
        return exc
    if isinstance(exc, ProtocolError):
        return FatalError(f"the replication stream broke the pgoutput protocol: {exc}")
    if isinstance(exc, psycopg2.errors.UndefinedObject):
        if "publication" in _first_line(exc):
            return FatalError(f"{_first_line(exc)}: run `mogli-bridge setup` to create it")
        return _missing_slot(slot)
    if isinstance(exc, psycopg2.errors.ObjectNotInPrerequisiteState):
        return FatalError(f"replication slot {slot} can no longer be read ({_first_line(exc)}); {RECOVERY}")
    return None


class ReplicationSource:
    """Committed source transactions, first the initial snapshot (when needed), then the live stream."""

    def __init__(
        self, settings: SourceSettings, *, resume_lsn: int | None, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self._settings = settings
        self._resume_lsn = resume_lsn
        self._clock = clock
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max(settings.queue_size, 1))
        self._assembler = TransactionAssembler(settings.schema)
        self._acked = resume_lsn or 0
        self._last_queued = resume_lsn or 0  # never queue a transaction ending at or before this again
        self._durable_start = resume_lsn or 0  # the ledger holds everything before this (or a snapshot)
        self._skipped_lsn = 0  # end of the newest transaction that had no change for us
        self._last_received = 0
        self._behind = False  # the last wakeup found more messages buffered than it may read
        self._creating_slot = False  # CREATE_REPLICATION_SLOT is running in a thread (it can wait long)
        self._last_commit_time: datetime | None = None
        self._reconnects = 0
        self._conn: Any = None
        self._cur: Any = None
        self._fd: int | None = None
        self._reading = False
        self._failure: asyncio.Future[BaseException] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._connected_at = 0.0
        self._target = SourceTarget.of(settings.dsn)

    # ---------------------------------------------------------------- public surface

    async def transactions(self) -> AsyncIterator[SourceTransaction]:
        """Yield transactions in commit order (connecting on first use); FatalError if it cannot go on."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="source.replication")
        while (item := await self._next()) is not None:
            self._maybe_resume()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _next(self) -> _Item | None:
        """The next queued item, or None once close() was called."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._closed.is_set():
            return None
        item = await next_or_stop(self._queue.get(), self._closed)
        return None if isinstance(item, Interrupted) else item

    def acknowledge(self, lsn: int) -> None:
        """Record that everything up to `lsn` is durable in the ledger; the status timer sends it."""
        self._acked = max(self._acked, lsn)

    async def close(self) -> None:
        """Stop reading and disconnect; idempotent."""
        self._closed.set()
        if self._creating_slot and self._conn is not None:
            # The slot waits for every transaction running when it began (and for the server's next
            # running-transactions record, up to 15 s apart): a stop must not wait for that. A cancel
            # request ends it (the half-made slot is not kept); conn.close() would wait for the call.
            with contextlib.suppress(Exception):
                await self._executor(self._conn.cancel)
        if self._task is not None:
            self._task.cancel()
            # close() also runs after the stream failed; that error already reached the consumer.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._disconnect()

    @property
    def behind(self) -> bool:
        """Whether the reader is working through a backlog: its last wakeup found more messages waiting
        than one wakeup reads (MESSAGES_PER_WAKEUP). False once a read finds nothing more. (A logical
        walsender's messages carry no usable end of WAL, so this is judged by what libpq holds.)"""
        return self._behind

    @property
    def stats(self) -> SourceStats:
        """Current progress counters."""
        return SourceStats(
            connected=self._cur is not None,
            last_received_lsn=self._last_received,
            acked_lsn=self._acked,
            reconnects=self._reconnects,
            last_commit_time=self._last_commit_time,
            queue_depth=self._queue.qsize(),
            paused=self._cur is not None and not self._reading,
        )

    # ---------------------------------------------------------------- lifecycle

    async def _run(self) -> None:
        try:
            if self._resume_lsn is None:
                await self._with_retries(self._take_snapshot)
            await self._with_retries(self._stream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._queue.put(exc)

    async def _with_retries(self, step: Callable[[], Any]) -> None:
        """Run `step` until it returns, reconnecting with backoff on errors that are not fatal."""
        attempt = 0
        while True:
            try:
                await step()
                return
            except (psycopg2.Error, OSError, ProtocolError, FatalError) as exc:
                await self._disconnect()
                fatal = _fatal_cause(exc, self._settings.slot)
                if fatal is not None:
                    raise fatal from exc
                cap = self._settings.reconnect_max_seconds
                if self._connected_at and time.monotonic() - self._connected_at > cap:
                    attempt = 0  # the connection was healthy for a while: start the backoff afresh
                self._connected_at = 0.0
                attempt += 1
                self._reconnects += 1
                delay = min(cap, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "source.reconnecting",
                    attempt=attempt,
                    delay=round(delay, 2),
                    error=type(exc).__name__,
                    reason=failure_reason(exc, self._settings.dsn),
                    **self._target.log_fields(),
                )
                await asyncio.sleep(delay)

    async def _executor(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _open_connection(self) -> Any:
        return psycopg2.connect(
            self._settings.dsn,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            options=session_options(self._settings.dsn),
        )

    async def _disconnect(self) -> None:
        self._stop_reading()
        conn, self._conn, self._cur, self._fd = self._conn, None, None, None
        self._assembler.reset()
        if conn is not None:
            await self._executor(conn.close)

    # ---------------------------------------------------------------- initial snapshot

    def _create_slot(self, conn: Any) -> tuple[int, str]:
        """Drop a stale slot, create the slot exporting its snapshot; return (consistent point, name)."""
        if slot_exists(self._settings.dsn, self._settings.slot):
            drop_slot(self._settings.dsn, self._settings.slot)  # nothing was ever acknowledged through it
        cur = conn.cursor()
        command = sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT").format(
            sql.Identifier(self._settings.slot)
        )
        cur.execute(command)
        _, consistent_point, snapshot_name, _ = cur.fetchone()
        return parse_lsn(consistent_point), str(snapshot_name)

    async def _take_snapshot(self) -> None:
        """Create the slot, queue the tables' rows as snapshot chunks, keep the connection for streaming."""
        self._conn = await self._executor(self._open_connection)
        self._creating_slot = True
        try:
            consistent, name = await self._executor(self._create_slot, self._conn)
        finally:
            self._creating_slot = False
        log.info("source.snapshot_started", slot=self._settings.slot, consistent_point=format_lsn(consistent))
        reader = SnapshotReader(self._settings.dsn, self._settings.schema, name)
        await self._executor(reader.open)
        try:
            pending: SourceTransaction | None = None
            while (chunk := await self._executor(reader.next_chunk)) is not None:
                if pending is not None:
                    await self._queue.put(pending)
                pending = SourceTransaction(
                    end_lsn=consistent, commit_time=self._clock(), changes=chunk[1], snapshot=True
                )
        finally:
            await self._executor(reader.close)
        if pending is None:
            pending = SourceTransaction(
                end_lsn=consistent, commit_time=self._clock(), changes=(), snapshot=True
            )
        await self._queue.put(replace(pending, last_snapshot_chunk=True))
        self._last_queued = self._durable_start = consistent
        log.info("source.snapshot_finished", slot=self._settings.slot, rows=reader.row_counts)

    # ---------------------------------------------------------------- streaming

    def _start_replication(self, conn: Any, start_lsn: int) -> Any:
        cur = conn.cursor()
        cur.start_replication(
            slot_name=self._settings.slot,
            decode=False,
            start_lsn=start_lsn,
            status_interval=max(1, round(self._settings.status_interval_seconds)),
            options={"proto_version": "1", "publication_names": self._settings.publication},
        )
        return cur

    async def _stream(self) -> None:
        """Start replication and pump messages until the connection fails (raises) or close()."""
        if self._conn is None:
            self._conn = await self._executor(self._open_connection)
        # Not from the last queued transaction: psycopg2 confirms a keepalive's wal_end when nothing it
        # received is unacknowledged, so the server must re-send what the ledger has not acknowledged yet
        # (it is dropped again in _handle) or the slot would move past it.
        start_lsn = max(self._acked, self._durable_start)
        self._cur = await self._executor(self._start_replication, self._conn, start_lsn)
        self._fd = self._conn.fileno()
        self._connected_at = time.monotonic()
        log.info(
            "source.connected",
            slot=self._settings.slot,
            start_lsn=format_lsn(start_lsn),
            **self._target.log_fields(),
        )
        loop = asyncio.get_running_loop()
        self._failure = loop.create_future()
        self._start_reading()
        while True:
            await asyncio.wait({self._failure}, timeout=self._settings.status_interval_seconds)
            if self._failure.done():
                raise self._failure.result()
            self._send_feedback()
            self._maybe_resume()

    def _start_reading(self) -> None:
        if self._fd is None or self._reading or self._failure is None or self._failure.done():
            return  # a failed stream stays stopped until _with_retries disconnects and connects again
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(self._fd, self._on_readable)
        except OSError as exc:  # the socket died under us (a server crash): the same as a read that failed
            self._failure.set_result(exc)
            return
        self._reading = True
        loop.call_soon(self._on_readable)  # libpq may already hold complete messages the socket won't signal

    def _stop_reading(self) -> None:
        if self._reading and self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
        self._reading = False

    def _maybe_resume(self) -> None:
        if not self._reading and self._cur is not None and self._queue.qsize() <= self._queue.maxsize // 2:
            self._start_reading()

    def _on_readable(self) -> None:
        """Drain buffered messages into transactions; pause when the queue is full."""
        if not self._reading or self._cur is None or self._failure is None or self._failure.done():
            return
        try:
            for _ in range(MESSAGES_PER_WAKEUP):
                if self._queue.full():
                    self._stop_reading()
                    return
                msg = self._cur.read_message()
                if msg is None:
                    self._behind = False  # caught up with what the server has sent
                    return
                self._handle(msg.data_start, msg.payload)
            # Budget spent (a backlog, a huge transaction): let other tasks run, then go on with what libpq
            # holds.
            self._behind = True
            asyncio.get_running_loop().call_soon(self._on_readable)
        except Exception as exc:  # a callback must not raise into the loop; _stream re-raises it
            self._stop_reading()
            self._failure.set_result(exc)

    def _handle(self, data_start: int, payload: bytes) -> None:
        self._last_received = max(self._last_received, data_start)
        tx = self._assembler.feed(decode(payload))
        if tx is None:
            return
        self._last_commit_time = tx.commit_time
        if tx.end_lsn <= self._last_queued:
            return  # re-sent after a reconnect; already handed to the consumer
        if not tx.changes:
            self._skipped_lsn = tx.end_lsn
            return
        self._queue.put_nowait(tx)
        self._last_queued = tx.end_lsn

    def _send_feedback(self) -> None:
        """Report the acknowledged LSN (plus trailing change-less transactions once all else is acked)."""
        flush = self._acked
        if self._acked >= self._last_queued and self._skipped_lsn > flush:
            flush = self._skipped_lsn
        if self._cur is not None:
            self._cur.send_feedback(write_lsn=flush, flush_lsn=flush, apply_lsn=flush, force=True)
