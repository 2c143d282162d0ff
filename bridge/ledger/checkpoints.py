"""Stream positions: the source LSN and a replay id per Salesforce channel (per org: see ledger/scope.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from bridge.ledger.scope import SOURCE_STREAM, scope_of
from bridge.ledger.tables import CHECKPOINTS
from bridge.ledger.workset import insert_many

__all__ = ["SOURCE_STREAM", "read_position", "write_position"]


def read_position(connection: Connection, stream: str) -> str | None:
    """The stored position of a stream (a channel: the scope's org's)."""
    stream = scope_of(connection).stream(stream)
    query = select(CHECKPOINTS.c.position).where(CHECKPOINTS.c.stream == stream)
    return connection.execute(query).scalar_one_or_none()


def write_position(connection: Connection, stream: str, position: str, now: datetime) -> None:
    """Store a stream position (update, else insert: one writer); a channel's is the scope's org's."""
    stream = scope_of(connection).stream(stream)
    values = {"position": position, "updated_at": now}
    done = connection.execute(update(CHECKPOINTS).where(CHECKPOINTS.c.stream == stream).values(values))
    if done.rowcount == 0:
        insert_many(connection, CHECKPOINTS, [{"stream": stream, **values}])
