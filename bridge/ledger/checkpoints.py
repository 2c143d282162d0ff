"""Stream positions: the source LSN and a replay id per Salesforce channel (per org: see ledger/scope.py).

The source has two: `source`, the LSN up to which every transaction is applied (where a restart resumes),
and `source.ahead`, the end LSNs of transactions applied ahead of it (pipeline/ingest_order.py), comma
separated, so that a restart skips them when the stream brings them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, select, update

from bridge.ledger.scope import SOURCE_AHEAD_STREAM, SOURCE_STREAM, scope_of
from bridge.ledger.tables import CHECKPOINTS
from bridge.ledger.workset import insert_many

__all__ = [
    "SOURCE_AHEAD_STREAM",
    "SOURCE_STREAM",
    "forget_source_position",
    "format_ahead",
    "parse_ahead",
    "read_position",
    "read_source_positions",
    "write_position",
]


def read_position(connection: Connection, stream: str) -> str | None:
    """The stored position of a stream (a channel: the scope's org's)."""
    stream = scope_of(connection).stream(stream)
    query = select(CHECKPOINTS.c.position).where(CHECKPOINTS.c.stream == stream)
    return connection.execute(query).scalar_one_or_none()


def read_source_positions(connection: Connection) -> tuple[str | None, str | None]:
    """The source's position and its `source.ahead` list, in one query (once per ingest batch)."""
    streams = (SOURCE_STREAM, SOURCE_AHEAD_STREAM)
    query = select(CHECKPOINTS.c.stream, CHECKPOINTS.c.position).where(CHECKPOINTS.c.stream.in_(streams))
    found = {str(stream): str(position) for stream, position in connection.execute(query)}
    return found.get(SOURCE_STREAM), found.get(SOURCE_AHEAD_STREAM)


def write_position(connection: Connection, stream: str, position: str, now: datetime) -> None:
    """Store a stream position (update, else insert: one writer); a channel's is the scope's org's."""
    stream = scope_of(connection).stream(stream)
    values = {"position": position, "updated_at": now}
    done = connection.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.stream == stream).values(values))
    if done.rowcount == 0:
        insert_many(connection, CHECKPOINTS, [{"stream": stream, **values}])


def parse_ahead(text: str | None) -> set[int]:
    """The LSNs of a `source.ahead` position."""
    return {int(part) for part in (text or "").split(",") if part}


def format_ahead(lsns: Iterable[int]) -> str:
    """A `source.ahead` position: the LSNs in order, comma separated ("" for none)."""
    return ",".join(str(lsn) for lsn in sorted(lsns))


def forget_source_position(connection: Connection, now: datetime) -> None:
    """`setup --reset-source`: the next run reads the tables again and remembers nothing applied ahead."""
    write_position(connection, SOURCE_STREAM, "", now)
    write_position(connection, SOURCE_AHEAD_STREAM, "", now)
