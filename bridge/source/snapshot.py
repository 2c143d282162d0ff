"""Reads the scheduler tables inside the snapshot a new slot exported, in chunks.

The reader imports the snapshot (`SET TRANSACTION SNAPSHOT`) in a REPEATABLE READ, read-only transaction
on an ordinary connection, so it sees exactly the rows committed before the slot's consistent point: the
stream from that point then has no gap and no duplicate. Values are selected as text and go through the same
conversion as streamed tuples. Synchronous psycopg2; every call runs in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from bridge.records.source import ChangeOp, SourceChange, SourceTable
from bridge.source.pgoutput import Column
from bridge.source.rows import build_row, columns_read, key_column
from bridge.source.values import session_options

CHUNK_ROWS = 1000

_COLUMNS = """
SELECT a.attname, a.atttypid::int
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class SnapshotReader:
    """`open()`, then `next_chunk()` until it returns None, then `close()`; all blocking."""

    def __init__(self, dsn: str, schema: str, snapshot_name: str, chunk_rows: int = CHUNK_ROWS) -> None:
        self._dsn = dsn
        self._schema = schema
        self._snapshot_name = snapshot_name
        self._chunk_rows = chunk_rows
        self._conn: PgConnection | None = None
        self._chunks: Iterator[tuple[SourceTable, tuple[SourceChange, ...]]] | None = None
        self.row_counts: dict[str, int] = {}

    def open(self) -> None:
        """Connect and import the exported snapshot."""
        conn = psycopg2.connect(self._dsn, options=session_options(self._dsn), connect_timeout=10)
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (self._snapshot_name,))
        self._conn = conn
        self._chunks = self._all_chunks(conn)

    def next_chunk(self) -> tuple[SourceTable, tuple[SourceChange, ...]] | None:
        """The next chunk of at most `chunk_rows` INSERT changes, or None when every table is read."""
        if self._chunks is None:
            raise RuntimeError("SnapshotReader.open() was not called")
        return next(self._chunks, None)

    def close(self) -> None:
        """End the snapshot transaction and disconnect."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _all_chunks(self, conn: PgConnection) -> Iterator[tuple[SourceTable, tuple[SourceChange, ...]]]:
        # Organizations and connections, users, links, then bookings: a row's parent comes first. A table
        # the database lacks (the tenancy tables of an older schema) yields nothing.
        for table in SourceTable:
            yield from self._table_chunks(conn, table)

    def _table_chunks(
        self, conn: PgConnection, table: SourceTable
    ) -> Iterator[tuple[SourceTable, tuple[SourceChange, ...]]]:
        with conn.cursor() as cur:
            cur.execute(_COLUMNS, (self._schema, table.value))
            wanted, key = set(columns_read(table)), key_column(table)
            columns = [Column(name, oid, -1, name == key) for name, oid in cur.fetchall() if name in wanted]
        self.row_counts[table.value] = 0
        if not columns:
            return
        select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns),
            sql.Identifier(self._schema, table.value),
        )
        with conn.cursor(name=f"mogli_snapshot_{table.value}") as cur:
            cur.itersize = self._chunk_rows
            cur.execute(select)
            while rows := cur.fetchmany(self._chunk_rows):
                self.row_counts[table.value] += len(rows)
                yield (
                    table,
                    tuple(
                        SourceChange(table, ChangeOp.INSERT, build_row(table, columns, values))
                        for values in rows
                    ),
                )
