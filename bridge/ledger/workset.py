"""An in-memory working copy of ledger rows, loaded in chunks and written back in bulk.

Applying a batch of source changes row by row against the database would cost several round trips per
row; instead the rows a batch can touch are loaded up front (IN lists of at most 500 keys), changed in
memory in source order, and written back with one executemany per table and kind (insert or update).

On SQLite a bulk write goes to the driver as one compiled statement and plain tuples, each value passed
through its parameter's own bind processor (`bulk_execute`): the same SQL and values SQLAlchemy would
send, without its per-row parameter machinery, which was most of the cost of ingesting a large
transaction. PostgreSQL keeps SQLAlchemy's batched "insertmanyvalues" path, which a plain executemany
would lose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Dialect,
    Insert,
    Table,
    Update,
    bindparam,
    insert,
    select,
    update,
)

from bridge.ledger.tables import UtcDateTime

CHUNK = 500
_T = TypeVar("_T")

Row = dict[str, Any]


def chunked(items: Iterable[_T], size: int = CHUNK) -> Iterator[list[_T]]:
    """Split items into lists of at most `size`."""
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class WorkingTable:
    """Rows of one table keyed by primary key, with what the database held when they were loaded."""

    def __init__(self, table: Table, key: str) -> None:
        self.table = table
        self.key = key
        self.rows: dict[str, Row] = {}
        self._original: dict[str, Row] = {}
        self._absent: set[str] = set()

    def get(self, key: str | None) -> Row | None:
        """The working row, or None when it does not exist (or was never loaded)."""
        return None if key is None else self.rows.get(key)

    def put(self, row: Row) -> Row:
        """Add a row that the database does not hold yet."""
        self.rows[row[self.key]] = row
        return row

    def load_keys(self, connection: Connection, keys: Iterable[str]) -> None:
        """Load the rows with these keys that are not loaded yet."""
        wanted = sorted({k for k in keys if k not in self.rows and k not in self._absent})
        column = self.table.c[self.key]
        for part in chunked(wanted):
            found = self._load(connection, column.in_(part))
            self._absent.update(set(part) - found)

    def load_where(
        self, connection: Connection, column: str, values: Iterable[str], extra: ColumnElement[bool]
    ) -> None:
        """Load every row whose `column` is one of `values` and that matches `extra`."""
        for part in chunked(sorted(set(values))):
            self._load(connection, self.table.c[column].in_(part) & extra)

    def _load(self, connection: Connection, where: ColumnElement[bool]) -> set[str]:
        found: set[str] = set()
        for mapping in connection.execute(select(self.table).where(where)).mappings():
            key = mapping[self.key]
            found.add(key)
            if key not in self.rows:
                self.rows[key] = dict(mapping)
                self._original[key] = dict(mapping)
        return found

    def flush(self, connection: Connection) -> int:
        """Write new and changed rows back: one executemany for inserts, one for updates."""
        inserts = [row for key, row in self.rows.items() if key not in self._original]
        updates = [
            {**{c: v for c, v in row.items() if c != self.key}, "k_key": key}
            for key, row in self.rows.items()
            if key in self._original and row != self._original[key]
        ]
        if inserts:
            bulk_execute(connection, insert(self.table), inserts)
        if updates:
            statement = update(self.table).where(self.table.c[self.key] == bindparam("k_key"))
            bulk_execute(connection, statement, updates)
        for key in self.rows:
            self._original[key] = dict(self.rows[key])
        return len(inserts) + len(updates)


def insert_many(connection: Connection, table: Table, rows: Sequence[Row]) -> None:
    """One executemany insert (nothing when there are no rows)."""
    if rows:
        bulk_execute(connection, insert(table), list(rows))


def bulk_execute(connection: Connection, statement: Insert | Update, rows: list[Row]) -> None:
    """`connection.execute(statement, rows)`, on SQLite without SQLAlchemy's per-row parameter building.

    Only for rows that all name the same parameters, every one of them used by the statement; anything else
    takes the ordinary path. Each value goes through the bind processor of its parameter's type.
    """
    names = rows[0].keys()
    if connection.dialect.name != "sqlite" or len(rows) < 2 or any(row.keys() != names for row in rows):
        connection.execute(statement, rows)
        return
    columns = [name for name in names if name != "k_key"]
    compiled = statement.compile(dialect=connection.dialect, column_keys=columns)
    order = compiled.positiontup
    if order is None or set(order) != set(names):
        connection.execute(statement, rows)
        return
    plan = [
        (
            name,
            _sqlite_processor(compiled.binds[name].type, connection.dialect),
            _is_json(compiled.binds[name]),
        )
        for name in order
    ]
    # JSON keeps None as JSON 'null', as SQLAlchemy's JSON type does; other types bind None as NULL.
    values = [
        tuple(row[n] if p is None or (row[n] is None and not j) else p(row[n]) for n, p, j in plan)
        for row in rows
    ]
    connection.exec_driver_sql(str(compiled), values)


def _sqlite_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The bind processor of `type_` on SQLite; for the ledger's two most frequent kinds of value, one that
    gives the same text without SQLAlchemy's layers: UTC timestamps (SQLite's stored format
    `YYYY-MM-DD HH:MM:SS.ffffff`, naive UTC) and empty JSON lists."""
    processor: Callable[[Any], Any] | None = type_._cached_bind_processor(dialect)
    if isinstance(type_, UtcDateTime):
        return _utc_text
    if isinstance(type_, JSON) and processor is not None:
        general = processor
        return lambda value: "[]" if value == [] else general(value)
    return processor


def _utc_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("the ledger stores timezone-aware datetimes only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _is_json(bind: Any) -> bool:
    return isinstance(bind.type, JSON)
