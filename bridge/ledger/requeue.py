"""Operator and inbound corrections to the outbox: retrying failures, noting deletions in Salesforce."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Table, select, update

from bridge.ledger.journal import append_journal
from bridge.ledger.scope import scope_of
from bridge.ledger.tables import ACTIVITIES, LINKS
from bridge.ledger.workset import chunked
from bridge.records.ledger import ActivitySyncState as A
from bridge.records.ledger import Direction, JournalEntry
from bridge.records.ledger import LinkSyncState as L


def _retry(
    connection: Connection, table: Table, where: ColumnElement[bool], now: datetime
) -> list[tuple[str, str | None]]:
    """Failed rows of the scope matching `where` go back to pending at a new version (attempts reset);
    returns their keys with their org_id.

    The new version makes the row due even when the failure came after its last write reached Salesforce
    (a TRUNCATE fails synced rows without a new version): the push then does what the mirror says now.
    """
    key = table.c.booking_id if table is ACTIVITIES else table.c.link_id
    failed = (table.c.state == "failed") & where & scope_of(connection).rows(table)
    keys = [(k, org) for k, org in connection.execute(select(key, table.c.org_id).where(failed))]
    values = {
        "state": "pending",
        "version": table.c.version + 1,
        "attempts": 0,
        "next_attempt_at": None,
        "updated_at": now,
    }
    connection.execute(update(table).where(failed).values(values))
    return keys


def requeue(
    connection: Connection,
    booking_ids: Collection[str] | None,
    all_failed: bool,
    now: datetime,
    requested_by: str = "admin",
) -> int:
    """Put failed activities (and the failed links they wait for) back in the queue; returns how many rows."""
    activities: list[tuple[str, str | None]] = []
    links: list[tuple[str, str | None]] = []
    if all_failed:
        activities = _retry(connection, ACTIVITIES, ACTIVITIES.c.state.is_not(None), now)
        links = _retry(connection, LINKS, LINKS.c.state.is_not(None), now)
    elif booking_ids:
        for part in chunked(sorted(set(booking_ids))):
            activities += _retry(connection, ACTIVITIES, ACTIVITIES.c.booking_id.in_(part), now)
            of_bookings = select(ACTIVITIES.c.link_id).where(ACTIVITIES.c.booking_id.in_(part))
            links += _retry(connection, LINKS, LINKS.c.link_id.in_(of_bookings), now)
    entries = [
        JournalEntry(
            now, Direction.ADMIN, entity, key, "admin.requeue", {"requested_by": requested_by}, org_id=org
        )
        for entity, keys in (("activity", activities), ("link", links))
        for key, org in keys
    ]
    append_journal(connection, entries)
    return len(activities) + len(links)


def mark_deleted_in_salesforce(
    connection: Connection, salesforce_ids: Collection[str], now: datetime, reason: str = "cdc"
) -> int:
    """Activities whose Event, and links whose Mogli Event, were deleted in Salesforce; returns how many."""
    entries: list[JournalEntry] = []
    for part in chunked(sorted(set(salesforce_ids))):
        for table, column, entity, state in (
            (ACTIVITIES, ACTIVITIES.c.activity_id, "activity", A.DELETED_IN_SALESFORCE.value),
            (LINKS, LINKS.c.mogli_event_id, "link", L.DELETED_IN_SALESFORCE.value),
        ):
            key = table.c.booking_id if table is ACTIVITIES else table.c.link_id
            where = column.in_(part) & (table.c.state != state) & scope_of(connection).rows(table)
            hits = connection.execute(select(key, column, table.c.org_id).where(where)).all()
            connection.execute(update(table).where(where).values(state=state, updated_at=now))
            entries += [
                JournalEntry(
                    now,
                    Direction.INBOUND,
                    entity,
                    k,
                    "salesforce.deleted",
                    {"salesforce_id": sf_id, "reason": reason},
                    org_id=org,
                )
                for k, sf_id, org in hits
            ]
    append_journal(connection, entries)
    return len(entries)
