"""Helpers shared by the replication integration tests: SQL one-liners, the test database, stream takers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg2

from bridge.config import SourceSettings
from bridge.devtools.localpg import LocalPostgres
from bridge.records.source import SourceTransaction
from bridge.source.reader import ReplicationSource


def execute(dsn: str, query: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own committed transaction; return its rows (if any)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@dataclass(frozen=True)
class SourceDb:
    """A fresh scheduler database with its publication, and settings naming a slot of its own."""

    cluster: LocalPostgres
    dsn: str
    settings: SourceSettings

    def run(self, query: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Execute one statement in its own transaction."""
        return execute(self.dsn, query, args)

    def add_user(self, sf_id: str | None = None) -> str:
        """Insert a user; returns its id."""
        uid = str(uuid.uuid4())
        self.run(
            "INSERT INTO scheduler.users (id, email, full_name, salesforce_user_id) "
            "VALUES (%s, 'person@example.invalid', 'A Person', %s)",
            (uid, sf_id),
        )
        return uid

    def add_bookings(self, link: str, count: int) -> None:
        """`count` bookings on `link` in one transaction."""
        self.run(
            "INSERT INTO scheduler.bookings"
            " (id, link_id, start_at, end_at, status, invitee_name, invitee_email)"
            " SELECT gen_random_uuid(), %s, now() + interval '1 day', now() + interval '1 day 30 minutes',"
            " 'scheduled', 'Invitee', 'i@example.invalid' FROM generate_series(1, %s)",
            (link, count),
        )

    def add_link(self, owner: str, description: str | None = None, link_type: str = "one_on_one") -> str:
        """Insert a link; returns its id."""
        lid = str(uuid.uuid4())
        self.run(
            "INSERT INTO scheduler.scheduling_links"
            " (id, link_type, owner_id, title, description, duration_minutes)"
            " VALUES (%s, %s, %s, 'Intro call', %s, 30)",
            (lid, link_type, owner, description),
        )
        return lid

    def settings_with(self, **changes: Any) -> SourceSettings:
        """The test's settings with some values changed."""
        return replace(self.settings, **changes)

    def confirmed_flush(self) -> int:
        """The slot's confirmed_flush_lsn as an integer."""
        rows = self.run(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (self.settings.slot,),
        )
        return int(rows[0][0])


async def take(
    stream: AsyncIterator[SourceTransaction], count: int, limit: float = 30.0
) -> list[SourceTransaction]:
    """The next `count` transactions of the stream, failing the test if they do not come within `limit` s."""
    async with asyncio.timeout(limit):
        return [await anext(stream) for _ in range(count)]


async def wait_until(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll a synchronous predicate (in a thread) until it holds; fail the test after `limit` s."""
    async with asyncio.timeout(limit):
        while not await asyncio.to_thread(predicate):  # noqa: ASYNC110 (the condition lives in PostgreSQL)
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def streaming(
    db: SourceDb, resume_lsn: int | None = None, **changes: Any
) -> AsyncIterator[tuple[ReplicationSource, AsyncIterator[SourceTransaction]]]:
    """A ReplicationSource on the test database and its transaction stream; closed on exit."""
    source = ReplicationSource(db.settings_with(**changes), resume_lsn=resume_lsn)
    stream = source.transactions()
    try:
        yield source, stream
    finally:
        await source.close()
        await stream.aclose()  # type: ignore[attr-defined]


async def skip_snapshot(source: ReplicationSource, stream: AsyncIterator[SourceTransaction]) -> int:
    """Consume and acknowledge the initial snapshot of an empty database; returns its consistent point."""
    (chunk,) = await take(stream, 1)
    assert chunk.snapshot and chunk.last_snapshot_chunk and chunk.changes == ()
    source.acknowledge(chunk.end_lsn)
    return chunk.end_lsn
