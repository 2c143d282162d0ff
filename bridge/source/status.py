"""Replication slot metrics: how much WAL the slot holds back and whether it is at risk.

Alert on `unconfirmed_bytes` and `retained_bytes` growing, `wal_status` leaving `reserved`, and
`safe_wal_size` approaching zero (only set when the server has `max_slot_wal_keep_size`).
Synchronous psycopg2; the caller runs it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2

from bridge.records.source import parse_lsn


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """One reading of `pg_replication_slots` for our slot."""

    slot: str
    active: bool
    active_pid: int | None
    wal_status: str | None
    safe_wal_size: int | None
    confirmed_flush_lsn: int | None
    restart_lsn: int | None
    unconfirmed_bytes: int | None
    retained_bytes: int | None


_QUERY = """
SELECT active, active_pid, wal_status, safe_wal_size,
       confirmed_flush_lsn::text, restart_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = %s
"""


def _lsn(text: str | None) -> int | None:
    return None if text is None else parse_lsn(text)


def slot_status(dsn: str, slot: str) -> SlotStatus | None:
    """Read the slot's metrics, or None when the slot does not exist."""
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(_QUERY, (slot,))
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    active, pid, wal_status, safe, confirmed, restart, unconfirmed, retained = row
    return SlotStatus(
        slot=slot,
        active=bool(active),
        active_pid=pid,
        wal_status=wal_status,
        safe_wal_size=safe,
        confirmed_flush_lsn=_lsn(confirmed),
        restart_lsn=_lsn(restart),
        unconfirmed_bytes=unconfirmed,
        retained_bytes=retained,
    )
