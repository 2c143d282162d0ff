"""Read-only access to the scheduler tables for reconciliation: ids in a scope, then rows by id, in chunks.

Values are selected as text and converted exactly as streamed tuples are (`rows.build_row`), so a row read
here compares equal to the ledger's mirror of the same row. Synchronous psycopg2, one short read-only
transaction per call, every call run in a thread; personal-data columns are never selected.

`scoped(org)` narrows the scope queries (booking, link and user ids) to one org as the scheduler holds it: a
user's organization (NULL: the default org), a link's owner's, a booking's link's. Rows by id are never
narrowed: a re-mirror must see a row as it is, wherever it belongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import sql

from bridge.records.ledger import DEFAULT_ORG
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
        self._scoped = False
        self._org: str | None = None  # with _scoped: the organization id, None for the default org

    def scoped(self, org_id: str | None) -> SchedulerReader:
        """A reader whose scope queries see one org (None or 'default': the default org of `[salesforce]`)."""
        view = copy.copy(self)
        view._scoped = True
        view._org = None if org_id in (None, DEFAULT_ORG) else org_id
        return view

    def _org_filter(self, cur: Any, table: str) -> tuple[sql.Composable, list[object]]:
        """A WHERE condition on `table` (users, scheduling_links, bookings, organizations) for the scope."""
        if not self._scoped:
            return sql.SQL("TRUE"), []
        if self._org is not None and not _uuids([self._org]):
            return sql.SQL("FALSE"), []
        if table == "organizations":
            return (sql.SQL("FALSE"), []) if self._org is None else (sql.SQL("id = %s::uuid"), [self._org])
        cur.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'users' AND column_name = 'organization_id'",
            (self._schema,),
        )
        if cur.fetchone() is None:  # a scheduling database from before CONTRACT §9: all the default org's
            return sql.SQL("TRUE" if self._org is None else "FALSE"), []
        users = sql.SQL("SELECT id FROM {} WHERE organization_id {}").format(
            self._table("users"), sql.SQL("IS NULL" if self._org is None else "= %s::uuid")
        )
        params: list[object] = [] if self._org is None else [self._org]
        if table == "users":
            return sql.SQL("id IN ({})").format(users), params
        if table == "scheduling_links":
            return sql.SQL("owner_id IN ({})").format(users), params
        links = sql.SQL("SELECT id FROM {} WHERE owner_id IN ({})").format(
            self._table("scheduling_links"), users
        )
        return sql.SQL("link_id IN ({})").format(links), params

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
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            scope, scope_params = self._org_filter(cur, "bookings")
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join([*where, scope])
            cur.execute(query, [*params, *scope_params])
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
            scope, params = self._org_filter(cur, table)
            cur.execute(sql.SQL("SELECT id::text FROM {} WHERE {}").format(self._table(table), scope), params)
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
