"""Wake-ups across workers (issue 14): the reader tells every worker which orgs got work, through the ledger.

Only the reader ingests, but each org is served by whichever worker holds its lease. After each ingest batch
the reader posts the orgs that got work (`post`); the `Wakeups` component sends them as
`NOTIFY mogli_bridge_work, '<org ids, comma separated>'` (and `NOTIFY mogli_bridge_orgs` when organizations
or connections changed) on a ledger connection of its own. Every worker LISTENs on another connection of its
own and wakes its fleet: the org's pusher claims at once instead of at its idle poll. Nothing depends on a
notification arriving: the idle poll (5 s) stays the fallback, and after the listening connection was lost
(notifications may have been missed meanwhile) every org is woken once.

Blocking driver calls run in a thread (sending) or are driven by the event loop's reader on the socket
(listening, psycopg2's asynchronous notification API), so the shared ledger thread is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from bridge.aio import next_or_stop, sleep_or_stop
from bridge.records.ledger import DEFAULT_ORG
from bridge.redact import describe

log = structlog.get_logger(__name__)

WORK_CHANNEL = "mogli_bridge_work"
ORGS_CHANNEL = "mogli_bridge_orgs"
PAYLOAD_LIMIT = 7000  # bytes of one NOTIFY payload (PostgreSQL's limit is 8000)
RECONNECT_SECONDS = 2.0


def payloads(orgs: Iterable[str | None]) -> list[str]:
    """The org ids (None: the default org) as comma-separated payloads, each within PAYLOAD_LIMIT."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for org in sorted({org or DEFAULT_ORG for org in orgs}):
        if current and size + len(org) + 1 > PAYLOAD_LIMIT:
            out.append(",".join(current))
            current, size = [], 0
        current.append(org)
        size += len(org) + 1
    if current:
        out.append(",".join(current))
    return out


def org_ids(payload: str) -> list[str]:
    """The org ids of one payload."""
    return [org for org in payload.split(",") if org]


def _dsn(url: str) -> str:
    """A libpq connection string for the ledger URL (psycopg2 takes the URL form)."""
    from bridge.ledger.engine import normalise_url

    return normalise_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Wakeups:
    """Sends the reader's wake-ups and listens for everyone's (one component per worker)."""

    def __init__(
        self,
        url: str,
        *,
        on_work: Callable[[list[str]], None],
        on_orgs: Callable[[], None],
        on_missed: Callable[[], None],
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        self._dsn = _dsn(url)
        self._on_work = on_work  # orgs got work
        self._on_orgs = on_orgs  # organizations or connections changed
        self._on_missed = on_missed  # notifications may have been missed: wake every org
        self._reconnect_seconds = reconnect_seconds
        self._pending: set[str] = set()
        self._orgs_changed = False
        self._posted = asyncio.Event()
        self._sender: Any = None  # the psycopg2 connection notifications are sent on
        self.listening = False
        self.sent = 0
        self.received = 0

    def post(self, orgs: Iterable[str | None], orgs_changed: bool = False) -> None:
        """Tell every worker (soon, coalesced with other posts) that these orgs got work."""
        self._pending.update(org or DEFAULT_ORG for org in orgs)
        self._orgs_changed |= orgs_changed
        if self._pending or self._orgs_changed:
            self._posted.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen and send until stop."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._listen(stop))
                tg.create_task(self._send_posted(stop))
        finally:
            await asyncio.to_thread(self._close_sender)

    # -------------------------------------------------------------------------------- sending

    async def _send_posted(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await next_or_stop(self._posted.wait(), stop)
            if not self._posted.is_set():
                continue
            self._posted.clear()
            orgs, changed = self._pending, self._orgs_changed
            self._pending, self._orgs_changed = set(), False
            try:
                await asyncio.to_thread(self._send, orgs, changed)
            except Exception as exc:  # the idle poll is the fallback: a lost wake-up delays, loses nothing
                log.warning("wakeup.send_failed", error=describe(exc))
                await asyncio.to_thread(self._close_sender)
                await sleep_or_stop(stop, self._reconnect_seconds)

    def _send(self, orgs: set[str], changed: bool) -> None:
        import psycopg2

        if self._sender is None:
            conn = psycopg2.connect(self._dsn)
            conn.autocommit = True
            self._sender = conn
        with self._sender.cursor() as cur:
            for payload in payloads(orgs):
                cur.execute("SELECT pg_notify(%s, %s)", (WORK_CHANNEL, payload))
                self.sent += 1
            if changed:
                cur.execute("SELECT pg_notify(%s, '')", (ORGS_CHANNEL,))
                self.sent += 1

    def _close_sender(self) -> None:
        conn, self._sender = self._sender, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # ------------------------------------------------------------------------------ listening

    async def _listen(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            try:
                conn = await asyncio.to_thread(self._connect_listening)
            except Exception as exc:
                log.warning("wakeup.listen_failed", error=describe(exc))
                await sleep_or_stop(stop, self._reconnect_seconds)
                continue
            if not first:
                self._on_missed()  # notifications sent while nobody listened here
            first = False
            try:
                await self._receive(conn, stop)
            except Exception as exc:
                log.warning("wakeup.listen_lost", error=describe(exc))
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    conn.close()
            await sleep_or_stop(stop, self._reconnect_seconds)

    def _connect_listening(self) -> Any:
        import psycopg2

        conn = psycopg2.connect(self._dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {WORK_CHANNEL}; LISTEN {ORGS_CHANNEL}")
        return conn

    async def _receive(self, conn: Any, stop: asyncio.Event) -> None:
        """Dispatch notifications as the socket delivers them, until stop or the connection breaks."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = conn.fileno()
        loop.add_reader(fd, readable.set)
        self.listening = True
        try:
            while not stop.is_set():
                await next_or_stop(readable.wait(), stop, within=5.0)
                readable.clear()
                conn.poll()  # reads what arrived; raises when the connection broke
                self._dispatch(conn)
        finally:
            loop.remove_reader(fd)

    def _dispatch(self, conn: Any) -> None:
        work: set[str] = set()
        changed = False
        while conn.notifies:
            note = conn.notifies.pop(0)
            self.received += 1
            if note.channel == ORGS_CHANNEL:
                changed = True
            else:
                work.update(org_ids(note.payload))
        if changed:
            self._on_orgs()
        if work:
            self._on_work(sorted(work))
