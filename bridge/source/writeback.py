"""Writes the bridge makes to the scheduling database, tagged with a replication origin.

The connection runs `pg_replication_origin_session_setup('mogli_bridge_writer')` once, so every transaction
it commits reaches the replication stream with an Origin message naming it; the change source drops those
transactions (`bridge/pipeline/echo.py`), and the bridge's own write-backs never come back as new work. A
session holds its origin for its lifetime, so this connection is dedicated and never pooled.

Running `pg_replication_origin_session_setup` needs superuser or
`GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO <role>`; `setup` creates the origin.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import structlog

from bridge.errors import ConfigurationError, SourceDisconnected
from bridge.source.target import SourceTarget, failure_reason

log = structlog.get_logger(__name__)

WRITER_ORIGIN = "mogli_bridge_writer"
ORIGIN_PREFIX = "mogli_bridge"


def ensure_origin(dsn: str, name: str = WRITER_ORIGIN) -> bool:
    """Create the replication origin if it does not exist; True when it was created."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_replication_origin_oid(%s)", (name,))
            row = cur.fetchone()
            if row is not None and row[0] is not None:
                return False
            cur.execute("SELECT pg_replication_origin_create(%s)", (name,))
            return True
    finally:
        conn.close()


def check_origin(dsn: str, name: str = WRITER_ORIGIN) -> tuple[bool, str]:
    """For `setup`: create the origin and try to take it in a session; (ok, a line for the report)."""
    try:
        created = ensure_origin(dsn, name)
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
                cur.execute("SELECT pg_replication_origin_session_reset()")
        finally:
            conn.close()
    except psycopg2.errors.InsufficientPrivilege:
        return False, (
            f"replication origin {name}: permission denied; the bridge's write-backs need "
            "pg_replication_origin_create/_session_setup (superuser, or GRANT EXECUTE on those functions)"
        )
    except psycopg2.errors.ObjectInUse:
        return True, f"replication origin {name} present (in use by a running daemon)"
    return (
        True,
        f"replication origin {name} {'created' if created else 'present'} (write-backs are not echoed)",
    )


def _close(conn: psycopg2.extensions.connection | None) -> None:
    if conn is not None and not conn.closed:
        conn.close()


class SchedulerWriter:
    """The bridge's write-backs to `bookings`, on one connection under the writer's replication origin."""

    def __init__(self, dsn: str, schema: str, origin: str = WRITER_ORIGIN) -> None:
        self._dsn = dsn
        self._schema = schema
        self._origin = origin
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.Lock()
        self.writes = 0

    def _where(self) -> str:
        """host:port/database of the DSN, for error messages (never the user or password)."""
        target = SourceTarget.of(self._dsn)
        return f"{target.host}:{target.port}/{target.database}"

    def _connect(self) -> psycopg2.extensions.connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn: psycopg2.extensions.connection | None = None
        try:
            ensure_origin(self._dsn, self._origin)
            conn = psycopg2.connect(self._dsn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_replication_origin_session_setup(%s)", (self._origin,))
            conn.commit()
        except psycopg2.errors.InsufficientPrivilege as exc:
            _close(conn)
            raise ConfigurationError(
                "the source role may not tag its writes with a replication origin: GRANT EXECUTE ON FUNCTION "
                "pg_replication_origin_create(text) and pg_replication_origin_session_setup(text) to it",
                "source.dsn",
            ) from exc
        except (psycopg2.OperationalError, psycopg2.errors.ObjectInUse) as exc:
            # Unreachable, or the origin still held by a previous daemon's backend that has not ended yet.
            _close(conn)
            raise SourceDisconnected(
                f"write-back connection to {self._where()} not available: {failure_reason(exc, self._dsn)}"
            ) from exc
        self._conn = conn
        return conn

    def _update(self, booking_id: str, assignments: dict[str, Any]) -> bool:
        """One UPDATE of one booking in its own transaction; True when the row exists."""
        columns = ", ".join(f"{name} = %({name})s" for name in assignments)
        sql = (
            f"UPDATE {self._schema}.bookings SET {columns}, updated_at = now() "  # noqa: S608 - schema validated
            "WHERE id = %(booking_id)s"
        )
        with self._lock:
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, {**assignments, "booking_id": booking_id})
                    found = cur.rowcount == 1
                conn.commit()
            except psycopg2.OperationalError as exc:
                conn.close()
                raise SourceDisconnected(
                    f"scheduling database {self._where()} unreachable for a write-back: "
                    f"{failure_reason(exc, self._dsn)}"
                ) from exc
            except BaseException:
                conn.rollback()
                raise
            self.writes += 1
        log.info("writeback.booking_updated", booking_id=booking_id, columns=sorted(assignments), found=found)
        return found

    async def set_times(self, booking_id: str, start_at: datetime, end_at: datetime) -> bool:
        """Move a booking (a person moved its Event and the policy lets that win)."""
        return await asyncio.to_thread(self._update, booking_id, {"start_at": start_at, "end_at": end_at})

    async def set_related_record(self, booking_id: str, related_record_id: str) -> bool:
        """Point a booking at another Salesforce record (Lead converted, Contacts merged)."""
        return await asyncio.to_thread(self._update, booking_id, {"related_record_id": related_record_id})

    async def set_assigned_user(self, booking_id: str, user_id: str) -> bool:
        """Assign a booking to another scheduler user (round robin reassigned in Salesforce)."""
        return await asyncio.to_thread(self._update, booking_id, {"assigned_user_id": user_id})

    def close(self) -> None:
        """Close the connection (its origin session ends with it)."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
