"""Inbound reads and writes: the rows a Salesforce change names, and the effects the inbound policy chose.

Every effect of one change event is written with the channel's replay position in one transaction, so a
crash either loses both (the event is delivered again and decided again) or keeps both. A scoped ledger
reads and changes only its org's rows: a Salesforce id of another org is unknown here.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, and_, or_, select, update

from bridge.ledger.checkpoints import write_position
from bridge.ledger.journal import append_journal
from bridge.ledger.scope import scope_of
from bridge.ledger.tables import ACTIVITIES, LINKS, USERS
from bridge.ledger.workset import chunked
from bridge.records.inbound import (
    ActivityChange,
    Cascade,
    InboundBatch,
    KnownActivity,
    KnownLink,
    LinkChange,
)
from bridge.records.ledger import ActivitySyncState as A
from bridge.records.ledger import Direction, JournalEntry
from bridge.records.ledger import LinkSyncState as L

# error_code of activities and links that went with a deleted Mogli Event (a Salesforce-side cascade).
MOGLI_EVENT_DELETED = "MOGLI_EVENT_DELETED"
_VALUE_COLUMNS = (
    "activity_id",
    "owner_salesforce_id",
    "who_id",
    "what_id",
    "start_at",
    "end_at",
    "related_record_id",
    "assigned_user_id",
)


def _known_activity(m: RowMapping) -> KnownActivity:
    return KnownActivity(
        booking_id=m["booking_id"],
        link_id=m["link_id"],
        activity_id=m["activity_id"],
        state=m["state"],
        owner_salesforce_id=m["owner_salesforce_id"],
        who_id=m["who_id"],
        what_id=m["what_id"],
        start_at=m["start_at"],
        end_at=m["end_at"],
        assigned_user_id=m["assigned_user_id"],
        related_record_id=m["related_record_id"],
        link_type=m["link_type"],
    )


def _activities_where(connection: Connection, where: ColumnElement[bool]) -> list[KnownActivity]:
    query = (
        select(ACTIVITIES, LINKS.c.link_type)
        .outerjoin(LINKS, LINKS.c.link_id == ACTIVITIES.c.link_id)
        .where(where, scope_of(connection).rows(ACTIVITIES))
    )
    return [_known_activity(m) for m in connection.execute(query).mappings()]


def find_activities(
    connection: Connection, salesforce_ids: Collection[str], booking_ids: Collection[str]
) -> list[KnownActivity]:
    """Activities whose Event id or booking id is among these."""
    out: list[KnownActivity] = []
    for column, keys in ((ACTIVITIES.c.activity_id, salesforce_ids), (ACTIVITIES.c.booking_id, booking_ids)):
        for part in chunked(sorted(set(keys))):
            out += _activities_where(connection, column.in_(part))
    return out


def activities_of_people(connection: Connection, who_ids: Collection[str]) -> list[KnownActivity]:
    """Activities whose Event the ledger last wrote with one of these WhoIds (e.g. a converted Lead)."""
    out: list[KnownActivity] = []
    for part in chunked(sorted(set(who_ids))):
        out += _activities_where(connection, ACTIVITIES.c.who_id.in_(part))
    return out


def find_links(
    connection: Connection, salesforce_ids: Collection[str], link_ids: Collection[str]
) -> list[KnownLink]:
    """Links whose Mogli Event id or link id is among these."""
    out: list[KnownLink] = []
    for column, keys in ((LINKS.c.mogli_event_id, salesforce_ids), (LINKS.c.link_id, link_ids)):
        for part in chunked(sorted(set(keys))):
            query = select(LINKS.c.link_id, LINKS.c.mogli_event_id, LINKS.c.state, LINKS.c.link_type)
            query = query.where(scope_of(connection).rows(LINKS))
            out += [
                KnownLink(m["link_id"], m["mogli_event_id"], m["state"], m["link_type"])
                for m in connection.execute(query.where(column.in_(part))).mappings()
            ]
    return out


def user_for_salesforce_id(connection: Connection, salesforce_user_id: str) -> str | None:
    """The scheduler user connected to this Salesforce user (the first, when several are)."""
    query = (
        select(USERS.c.user_id)
        .where(
            USERS.c.salesforce_user_id.in_({salesforce_user_id, salesforce_user_id[:15]}),
            scope_of(connection).rows(USERS),
        )
        .order_by(USERS.c.user_id)
        .limit(1)
    )
    return connection.execute(query).scalar_one_or_none()


def apply_batch(connection: Connection, batch: InboundBatch, now: datetime) -> None:
    """Write the effects of one change event, its journal entries and the channel position."""
    entries: list[JournalEntry] = []
    for link in batch.links:
        entries += _apply_link(connection, link, now)
    for activity in batch.activities:
        entries += _apply_activity(connection, activity, now)
    for entity, key, action, detail in batch.notes:
        entries.append(JournalEntry(now, Direction.INBOUND, entity, key, action, dict(detail)))
    append_journal(connection, entries)
    if batch.checkpoint_stream is not None and batch.checkpoint_position is not None:
        write_position(connection, batch.checkpoint_stream, batch.checkpoint_position, now)


def _requeued(table_version: Any, now: datetime) -> dict[str, Any]:
    """Columns of a row put back to pending at a new version."""
    return {
        "state": A.PENDING.value,
        "version": table_version + 1,
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "error_code": None,
        "updated_at": now,
    }


def _apply_activity(connection: Connection, change: ActivityChange, now: datetime) -> list[JournalEntry]:
    values: dict[str, Any] = {c: getattr(change, c) for c in _VALUE_COLUMNS if getattr(change, c) is not None}
    if change.state is not None:
        values["state"] = change.state
    if change.error_code is not None:
        values["error_code"] = change.error_code
    if change.requeue:
        values.update(_requeued(ACTIVITIES.c.version, now))
    values["updated_at"] = now
    scope = scope_of(connection)
    where = (ACTIVITIES.c.booking_id == change.booking_id) & scope.rows(ACTIVITIES)
    done = connection.execute(update(ACTIVITIES).where(where).values(values))
    if done.rowcount == 0 and not scope.every:
        return []  # not this org's row: nothing happened here to journal
    return [
        JournalEntry(
            now, Direction.INBOUND, "activity", change.booking_id, change.action, dict(change.detail)
        )
    ]


def _apply_link(connection: Connection, change: LinkChange, now: datetime) -> list[JournalEntry]:
    values: dict[str, Any] = {"updated_at": now}
    if change.state is not None:
        values["state"] = change.state
    if change.mogli_event_id is not None:
        values["mogli_event_id"] = change.mogli_event_id
        values["error_code"] = None
    if change.clear_mogli_event_id:
        values["mogli_event_id"] = None
    scope = scope_of(connection)
    where = (LINKS.c.link_id == change.link_id) & scope.rows(LINKS)
    before = connection.execute(select(LINKS.c.mogli_event_id).where(where)).scalar_one_or_none()
    if change.cascade is Cascade.MARK_DELETED:
        values["error_code"] = MOGLI_EVENT_DELETED
    done = connection.execute(update(LINKS).where(where).values(values))
    if done.rowcount == 0 and not scope.every:
        return []  # not this org's row: no journal entry, no cascade
    entries = [
        JournalEntry(now, Direction.INBOUND, "link", change.link_id, change.action, dict(change.detail))
    ]
    if change.cascade is Cascade.MARK_DELETED and before is not None:
        entries += _cascade_deleted(connection, change.link_id, before, now)
    elif change.cascade is Cascade.RESTORE:
        entries += _cascade_restored(connection, change.link_id, now)
    return entries


def _cascade_deleted(
    connection: Connection, link_id: str, mogli_event_id: str, now: datetime
) -> list[JournalEntry]:
    """The Events whose WhatId was the deleted Mogli Event went with it (Salesforce's cascade)."""
    went = and_(
        scope_of(connection).rows(ACTIVITIES),
        ACTIVITIES.c.link_id == link_id,
        ACTIVITIES.c.what_id == mogli_event_id,
        ACTIVITIES.c.state.in_(
            (A.SYNCED.value, A.PENDING.value, A.FAILED.value, A.DELETED_IN_SALESFORCE.value)
        ),
    )
    keys = [k for (k,) in connection.execute(select(ACTIVITIES.c.booking_id).where(went))]
    values = {"state": A.DELETED_IN_SALESFORCE.value, "error_code": MOGLI_EVENT_DELETED, "updated_at": now}
    connection.execute(update(ACTIVITIES).where(went).values(values))
    detail = {"mogli_event_id": mogli_event_id}
    return [
        JournalEntry(now, Direction.INBOUND, "activity", k, "salesforce.deleted_with_mogli_event", detail)
        for k in keys
    ]


def _cascade_restored(connection: Connection, link_id: str, now: datetime) -> list[JournalEntry]:
    """The Events that went with the Mogli Event are written again (restored with it, or recreated)."""
    back = and_(
        scope_of(connection).rows(ACTIVITIES),
        ACTIVITIES.c.link_id == link_id,
        ACTIVITIES.c.state == A.DELETED_IN_SALESFORCE.value,
        ACTIVITIES.c.error_code == MOGLI_EVENT_DELETED,
    )
    keys = [k for (k,) in connection.execute(select(ACTIVITIES.c.booking_id).where(back))]
    connection.execute(update(ACTIVITIES).where(back).values(_requeued(ACTIVITIES.c.version, now)))
    return [
        JournalEntry(now, Direction.INBOUND, "activity", k, "salesforce.restored_with_mogli_event", {})
        for k in keys
    ]


def _deleted_links(connection: Connection) -> ColumnElement[bool]:
    """Links of the scope whose Mogli Event was deleted in Salesforce (a new booking writes it again)."""
    return and_(
        scope_of(connection).rows(LINKS),
        LINKS.c.state == L.DELETED_IN_SALESFORCE.value,
        LINKS.c.error_code == MOGLI_EVENT_DELETED,
        LINKS.c.source_deleted.is_(False),
    )


def has_deleted_links(connection: Connection) -> bool:
    """Whether any such link exists in the scope (one indexed probe)."""
    found = connection.execute(select(LINKS.c.link_id).where(_deleted_links(connection)).limit(1))
    return found.first() is not None


def recreate_deleted_links(connection: Connection, now: datetime) -> list[str]:
    """Links whose Mogli Event was deleted in Salesforce and that have a new booking waiting: their Mogli
    Event is written again, with their future Events. Returns the link ids."""
    scope = scope_of(connection)
    waiting = select(ACTIVITIES.c.link_id).where(
        ACTIVITIES.c.state == A.PENDING.value, ACTIVITIES.c.source_deleted.is_(False)
    )
    due = and_(_deleted_links(connection), LINKS.c.link_id.in_(waiting))
    link_ids = [k for (k,) in connection.execute(select(LINKS.c.link_id).where(due))]
    entries: list[JournalEntry] = []
    for part in chunked(link_ids):
        connection.execute(
            update(LINKS).where(LINKS.c.link_id.in_(part)).values(_requeued(LINKS.c.version, now))
        )
        future = and_(
            scope.rows(ACTIVITIES),
            ACTIVITIES.c.link_id.in_(part),
            ACTIVITIES.c.start_at > now,
            ACTIVITIES.c.source_deleted.is_(False),
            or_(
                and_(
                    ACTIVITIES.c.state == A.DELETED_IN_SALESFORCE.value,
                    ACTIVITIES.c.error_code == MOGLI_EVENT_DELETED,
                ),
                ACTIVITIES.c.state == A.SYNCED.value,
            ),
        )
        rows = connection.execute(select(ACTIVITIES.c.booking_id, ACTIVITIES.c.link_id).where(future)).all()
        connection.execute(update(ACTIVITIES).where(future).values(_requeued(ACTIVITIES.c.version, now)))
        entries += [
            JournalEntry(
                now, Direction.INBOUND, "activity", b, "policy.recreate_with_mogli_event", {"link_id": lnk}
            )
            for b, lnk in rows
        ]
    entries += [
        JournalEntry(
            now, Direction.INBOUND, "link", k, "policy.recreate_mogli_event", {"reason": "new booking"}
        )
        for k in link_ids
    ]
    append_journal(connection, entries)
    return link_ids
