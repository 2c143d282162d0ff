"""Read-only access to the scheduler tables for reconciliation: ids in a scope, then rows by id, in chunks.

Values are selected as text and converted exactly as streamed tuples are (`rows.build_row`), so a row read
here compares equal to the ledger's mirror of the same row. Synchronous psycopg2, one short read-only
transaction per call, every call run in a thread; personal-data columns are never selected.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime

import psycopg2
from psycopg2 import sql

from bridge.records.source import (
    BookingRow,
    ConnectionRow,
    LinkRow,
    OrganizationRow,
    SourceRow,
    SourceTable,
    UserRow,
)
from bridge.source.pgoutput import Column
from bridge.source.rows import build_row, columns_read, key_column
from bridge.source.values import session_options

_COLUMNS = """
SELECT a.attname, a.atttypid::int
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""


def _uuids(values: Sequence[str]) -> list[str]:
    """The values that are UUIDs (the scheduler's keys); anything else cannot name a row."""
    out = []
    for value in values:
        with contextlib.suppress(ValueError):
            out.append(str(uuid.UUID(value)))
    return out


class SchedulerReader:
    """Scope queries and rows by id from the scheduling database (never writes)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn = dsn
        self._schema = schema

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self._dsn, options=session_options(self._dsn), connect_timeout=10)
        conn.set_session(readonly=True, autocommit=True)
        return conn

    def _table(self, name: str) -> sql.Composable:
        return sql.Identifier(self._schema, name)

    def _booking_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str | None, str | None]]:
        where: list[sql.Composable] = []
        params: list[object] = []
        for column, values in (("link_id", links), ("id", bookings)):
            if values:
                where.append(sql.SQL("{} = ANY(%s::uuid[])").format(sql.Identifier(column)))
                params.append(_uuids(values))
        for op, value in ((">=", since), ("<", until)):
            if value is not None:
                where.append(sql.SQL("start_at " + op + " %s"))
                params.append(value)
        query = sql.SQL("SELECT id::text, link_id::text, assigned_user_id::text FROM {}").format(
            self._table("bookings")
        )
        if where:
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return sorted((r[0], r[1], r[2]) for r in cur.fetchall())

    def _rows(self, table: SourceTable, ids: Sequence[str]) -> list[SourceRow]:
        """The rows of `table` with these ids; none from a table the database lacks (an older schema)."""
        ids = _uuids(ids)
        if not ids:
            return []
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(_COLUMNS, (self._schema, table.value))
            wanted, key = set(columns_read(table)), key_column(table)
            columns = [Column(name, oid, -1, name == key) for name, oid in cur.fetchall() if name in wanted]
            order = {name: i for i, name in enumerate(columns_read(table))}
            columns.sort(key=lambda c: order[c.name])
            if not columns:
                return []
            query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s::uuid[])").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns),
                self._table(table.value),
                sql.Identifier(key),
            )
            cur.execute(query, (list(ids),))
            return [build_row(table, columns, values) for values in cur.fetchall()]

    async def booking_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str | None, str | None]]:
        """(booking id, link id, assigned user id) of the bookings in scope (all when no filter), sorted."""
        return await asyncio.to_thread(self._booking_ids, links, bookings, since, until)

    async def link_ids(self) -> list[str]:
        """Every link id, sorted."""
        return await asyncio.to_thread(self._all_ids, "scheduling_links")

    async def user_ids(self) -> list[str]:
        """Every user id, sorted."""
        return await asyncio.to_thread(self._all_ids, "users")

    async def organization_ids(self) -> list[str]:
        """Every organization id, sorted (none when the database has no organizations table)."""
        return await asyncio.to_thread(self._all_ids, "organizations", optional=True)

    def _all_ids(self, table: str, *, optional: bool = False) -> list[str]:
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            if optional:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{self._schema}"."{table}"',))
                row = cur.fetchone()
                if row is None or not row[0]:
                    return []
            cur.execute(sql.SQL("SELECT id::text FROM {}").format(self._table(table)))
            return sorted(r[0] for r in cur.fetchall())

    async def bookings(self, ids: Sequence[str]) -> dict[str, BookingRow]:
        """The bookings with these ids that exist, by id."""
        rows = await asyncio.to_thread(self._rows, SourceTable.BOOKINGS, ids)
        return {r.id: r for r in rows if isinstance(r, BookingRow)}

    async def links(self, ids: Sequence[str]) -> dict[str, LinkRow]:
        """The links with these ids that exist, by id."""
        rows = await asyncio.to_thread(self._rows, SourceTable.LINKS, ids)
        return {r.id: r for r in rows if isinstance(r, LinkRow)}

    async def users(self, ids: Sequence[str]) -> dict[str, UserRow]:
        """The users with these ids that exist, by id."""
        rows = await asyncio.to_thread(self._rows, SourceTable.USERS, ids)
        return {r.id: r for r in rows if isinstance(r, UserRow)}

    async def organizations(self, ids: Sequence[str]) -> dict[str, OrganizationRow]:
        """The organizations with these ids that exist, by id."""
        rows = await asyncio.to_thread(self._rows, SourceTable.ORGANIZATIONS, ids)
        return {r.id: r for r in rows if isinstance(r, OrganizationRow)}

    async def connections(self, ids: Sequence[str]) -> dict[str, ConnectionRow]:
        """The Salesforce connections of these organization ids that exist, by organization id."""
        rows = await asyncio.to_thread(self._rows, SourceTable.CONNECTIONS, ids)
        return {r.id: r for r in rows if isinstance(r, ConnectionRow)}
