"""Read-side queries for the `ledger` command, status and invariant checks: the connection scope's rows."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Table, func, literal, select, union_all

from bridge.ledger.scope import scope_of
from bridge.ledger.tables import ACTIVITIES, LINKS
from bridge.ledger.workset import chunked
from bridge.records.ledger import ActivityRecord, FailureRecord, LinkRecord

DEFAULT_LIMIT = 100


def _filters(
    connection: Connection,
    table: Table,
    *,
    link_id: str | None = None,
    booking_id: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [scope_of(connection).rows(table)]
    if link_id is not None:
        where.append(table.c.link_id == link_id)
    if booking_id is not None and "booking_id" in table.c:
        where.append(table.c.booking_id == booking_id)
    if state is not None:
        where.append(table.c.state == state)
    if since is not None:
        where.append(table.c.updated_at >= since)
    return where


def _link_record(m: Any) -> LinkRecord:
    values = dict(m)
    values["problems"] = tuple(values["problems"] or ())
    return LinkRecord(**values)


def _activity_record(m: Any) -> ActivityRecord:
    values = dict(m)
    values["problems"] = tuple(values["problems"] or ())
    return ActivityRecord(**values)


def list_links(
    connection: Connection,
    *,
    link_id: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[LinkRecord]:
    """Links, most recently changed first."""
    query = (
        select(LINKS)
        .where(*_filters(connection, LINKS, link_id=link_id, state=state, since=since))
        .order_by(LINKS.c.updated_at.desc(), LINKS.c.link_id)
        .limit(limit)
    )
    return [_link_record(m) for m in connection.execute(query).mappings()]


def list_activities(
    connection: Connection,
    *,
    link_id: str | None = None,
    booking_id: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> list[ActivityRecord]:
    """Activities, most recently changed first; `limit=None` returns every match."""
    where = _filters(connection, ACTIVITIES, link_id=link_id, booking_id=booking_id, state=state, since=since)
    query: Select[Any] = (
        select(ACTIVITIES).where(*where).order_by(ACTIVITIES.c.updated_at.desc(), ACTIVITIES.c.booking_id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [_activity_record(m) for m in connection.execute(query).mappings()]


def activities_by_id(connection: Connection, booking_ids: Collection[str]) -> dict[str, ActivityRecord]:
    """The activities with these booking ids (chunked IN lists)."""
    found: dict[str, ActivityRecord] = {}
    for part in chunked(sorted(set(booking_ids))):
        query = select(ACTIVITIES).where(
            ACTIVITIES.c.booking_id.in_(part), scope_of(connection).rows(ACTIVITIES)
        )
        for m in connection.execute(query).mappings():
            found[m["booking_id"]] = _activity_record(m)
    return found


def get_link(connection: Connection, link_id: str) -> LinkRecord | None:
    """One link, or None."""
    query = select(LINKS).where(LINKS.c.link_id == link_id, scope_of(connection).rows(LINKS))
    m = connection.execute(query).mappings().first()
    return _link_record(m) if m is not None else None


def get_activity(connection: Connection, booking_id: str) -> ActivityRecord | None:
    """One activity, or None."""
    query = select(ACTIVITIES).where(
        ACTIVITIES.c.booking_id == booking_id, scope_of(connection).rows(ACTIVITIES)
    )
    m = connection.execute(query).mappings().first()
    return _activity_record(m) if m is not None else None


def list_failures(
    connection: Connection,
    *,
    link_id: str | None = None,
    booking_id: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[FailureRecord]:
    """Failed links and activities, most recent first."""
    combined = _failures(connection, link_id, booking_id, since)
    query = select(combined).order_by(combined.c.updated_at.desc(), combined.c.key).limit(limit)
    return [FailureRecord(**dict(m)) for m in connection.execute(query).mappings()]


def count_links(
    connection: Connection,
    *,
    link_id: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
) -> int:
    """How many links `list_links` matches, without its limit."""
    where = _filters(connection, LINKS, link_id=link_id, state=state, since=since)
    return int(connection.execute(select(func.count()).select_from(LINKS).where(*where)).scalar_one())


def count_activities(
    connection: Connection,
    *,
    link_id: str | None = None,
    booking_id: str | None = None,
    state: str | None = None,
    since: datetime | None = None,
) -> int:
    """How many activities `list_activities` matches, without its limit."""
    where = _filters(connection, ACTIVITIES, link_id=link_id, booking_id=booking_id, state=state, since=since)
    return int(connection.execute(select(func.count()).select_from(ACTIVITIES).where(*where)).scalar_one())


def count_failures(
    connection: Connection,
    *,
    link_id: str | None = None,
    booking_id: str | None = None,
    since: datetime | None = None,
) -> int:
    """How many rows `list_failures` matches, without its limit."""
    query = select(func.count()).select_from(_failures(connection, link_id, booking_id, since))
    return int(connection.execute(query).scalar_one())


def _failures(
    connection: Connection, link_id: str | None, booking_id: str | None, since: datetime | None
) -> Any:
    """Failed links and activities as one subquery (entity, key, link_id, error, attempts, updated_at)."""
    links = select(
        literal("link").label("entity"),
        LINKS.c.link_id.label("key"),
        LINKS.c.link_id,
        LINKS.c.error_code,
        LINKS.c.last_error,
        LINKS.c.attempts,
        LINKS.c.updated_at,
    ).where(LINKS.c.state == "failed", *_filters(connection, LINKS, link_id=link_id, since=since))
    activities = select(
        literal("activity").label("entity"),
        ACTIVITIES.c.booking_id.label("key"),
        ACTIVITIES.c.link_id,
        ACTIVITIES.c.error_code,
        ACTIVITIES.c.last_error,
        ACTIVITIES.c.attempts,
        ACTIVITIES.c.updated_at,
    ).where(
        ACTIVITIES.c.state == "failed",
        *_filters(connection, ACTIVITIES, link_id=link_id, booking_id=booking_id, since=since),
    )
    parts = [activities] if booking_id is not None else [links, activities]
    return union_all(*parts).subquery()


def counts(connection: Connection) -> dict[str, int]:
    """Row counts by state: keys 'activities.<state>' and 'links.<state>'."""
    result: dict[str, int] = {}
    for name, table in (("activities", ACTIVITIES), ("links", LINKS)):
        query = select(table.c.state, func.count()).where(scope_of(connection).rows(table))
        query = query.group_by(table.c.state)
        for state, count in connection.execute(query):
            result[f"{name}.{state}"] = int(count)
    return result
