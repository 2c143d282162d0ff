"""The append-only journal: writing entries from other directions and reading them back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, or_, select

from bridge.ledger.scope import scope_of
from bridge.ledger.tables import JOURNAL
from bridge.ledger.workset import Row, insert_many
from bridge.records.ledger import Direction, JournalEntry


def outbound_row(
    now: datetime,
    entity: str,
    key: str,
    action: str,
    detail: dict[str, Any],
    org_id: str | None = None,
) -> Row:
    """A journal row (insert parameters) for an outbound entry of `org_id`'s row (None: the default org)."""
    return {
        "at": now,
        "org_id": org_id,
        "direction": Direction.OUTBOUND.value,
        "entity": entity,
        "entity_key": key,
        "action": action,
        "detail": detail,
    }


def append_journal(connection: Connection, entries: Sequence[JournalEntry]) -> None:
    """Append entries (one executemany); an entry naming no org gets the scope's."""
    scope = scope_of(connection)
    rows = [
        {
            "at": e.at,
            "org_id": scope.written_org(e.org_id),
            "direction": e.direction.value,
            "entity": e.entity,
            "entity_key": e.entity_key,
            "action": e.action,
            "detail": dict(e.detail),
        }
        for e in entries
    ]
    insert_many(connection, JOURNAL, rows)


def list_journal(
    connection: Connection,
    *,
    entity: str | None = None,
    key: str | None = None,
    link_id: str | None = None,
    booking_id: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[JournalEntry]:
    """Journal entries, newest first; `link_id` / `booking_id` select that link's or booking's entries."""
    query = _journal_query(connection, select(JOURNAL), entity, key, link_id, booking_id, since)
    query = query.order_by(JOURNAL.c.id.desc()).limit(limit)
    return [_journal_entry(m) for m in connection.execute(query).mappings()]


def count_journal(
    connection: Connection,
    *,
    link_id: str | None = None,
    booking_id: str | None = None,
    since: datetime | None = None,
) -> int:
    """How many entries `list_journal` matches, without its limit."""
    query = _journal_query(
        connection, select(func.count()).select_from(JOURNAL), None, None, link_id, booking_id, since
    )
    return int(connection.execute(query).scalar_one())


def _journal_query(
    connection: Connection,
    query: Any,
    entity: str | None,
    key: str | None,
    link_id: str | None,
    booking_id: str | None,
    since: datetime | None,
) -> Any:
    """`query` narrowed by the journal's filters and the connection's org scope."""
    if entity is not None:
        query = query.where(JOURNAL.c.entity == entity)
    if key is not None:
        query = query.where(JOURNAL.c.entity_key == key)
    keyed = []
    if link_id is not None:
        keyed.append((JOURNAL.c.entity == "link") & (JOURNAL.c.entity_key == link_id))
    if booking_id is not None:
        keyed.append((JOURNAL.c.entity == "activity") & (JOURNAL.c.entity_key == booking_id))
    if keyed:
        query = query.where(or_(*keyed))
    if since is not None:
        query = query.where(JOURNAL.c.at >= since)
    return query.where(scope_of(connection).rows(JOURNAL))


def _journal_entry(m: Any) -> JournalEntry:
    """One journal row as its record."""
    return JournalEntry(
        id=m["id"],
        at=m["at"],
        direction=Direction(m["direction"]),
        entity=m["entity"],
        entity_key=m["entity_key"],
        action=m["action"],
        detail=m["detail"],
        org_id=m["org_id"],
    )
