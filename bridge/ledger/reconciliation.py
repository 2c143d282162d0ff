"""Ledger reads and writes of reconciliation: rows in a scope, re-mirroring and requeueing drifted rows, chunk
progress. Every read and repair keeps to the connection's org scope (ledger/scope.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from bridge.ledger.checkpoints import SOURCE_STREAM, read_position
from bridge.ledger.inbound import MOGLI_EVENT_DELETED
from bridge.ledger.ingest import apply_batch
from bridge.ledger.journal import append_journal
from bridge.ledger.queries import _link_record
from bridge.ledger.requeue import mark_deleted_in_salesforce
from bridge.ledger.runs import add_drift
from bridge.ledger.scope import OrgScope, scope_of
from bridge.ledger.tables import ACTIVITIES, JOURNAL, LINKS, RUNS, USERS
from bridge.ledger.workset import chunked
from bridge.records.ledger import ActivitySyncState as A
from bridge.records.ledger import (
    Direction,
    DriftItem,
    JournalEntry,
    JsonObject,
    LinkRecord,
    ReconciliationRun,
)
from bridge.records.source import IngestBatch, SourceChange, SourceTable, SourceTransaction

# Activities a link's new Mogli Event sends again (the others are gone, waiting or refused anyway).
_RELINK_STATES = (A.SYNCED.value, A.PENDING.value, A.FAILED.value)
# Runs that stopped before their last chunk and may be resumed.
RESUMABLE_STATES = ("running", "paused")
# The journal's entity for each source table (ingest journals every source change under it).
_ENTITY = {SourceTable.USERS: "user", SourceTable.LINKS: "link", SourceTable.BOOKINGS: "activity"}
MirrorKey = tuple[str, str]  # journal entity, row id


def activity_ids(
    connection: Connection,
    links: Sequence[str],
    bookings: Sequence[str],
    since: datetime | None,
    until: datetime | None,
) -> list[tuple[str, str | None, str | None]]:
    """(booking id, link id, assigned user id) of the activities in scope (all: no filter), sorted."""
    query = select(ACTIVITIES.c.booking_id, ACTIVITIES.c.link_id, ACTIVITIES.c.assigned_user_id)
    query = query.where(scope_of(connection).rows(ACTIVITIES))
    if links:
        query = query.where(ACTIVITIES.c.link_id.in_(list(links)))
    if bookings:
        query = query.where(ACTIVITIES.c.booking_id.in_(list(bookings)))
    if since is not None:
        query = query.where(ACTIVITIES.c.start_at >= since)
    if until is not None:
        query = query.where(ACTIVITIES.c.start_at < until)
    return sorted((b, link, a) for b, link, a in connection.execute(query))


def changed_ids(
    connection: Connection, since: datetime, until: datetime | None
) -> tuple[list[tuple[str, str | None, str | None]], list[str]]:
    """Activities (booking, link, assigned user) and link ids whose row changed in [since, until), sorted."""

    scope = scope_of(connection)

    def window(table: Any) -> Any:
        changed = (table.c.updated_at >= since) & scope.rows(table)
        return changed & (table.c.updated_at < until) if until is not None else changed

    columns = (ACTIVITIES.c.booking_id, ACTIVITIES.c.link_id, ACTIVITIES.c.assigned_user_id)
    activities = sorted(
        (b, link, a) for b, link, a in connection.execute(select(*columns).where(window(ACTIVITIES)))
    )
    links = sorted(k for (k,) in connection.execute(select(LINKS.c.link_id).where(window(LINKS))))
    return activities, links


def link_ids(connection: Connection) -> list[str]:
    """Every link id the ledger knows, sorted."""
    query = select(LINKS.c.link_id).where(scope_of(connection).rows(LINKS))
    return sorted(k for (k,) in connection.execute(query))


def links_by_id(connection: Connection, ids: Collection[str]) -> dict[str, LinkRecord]:
    """The links with these ids."""
    found: dict[str, LinkRecord] = {}
    for part in chunked(sorted(set(ids))):
        query = select(LINKS).where(LINKS.c.link_id.in_(part), scope_of(connection).rows(LINKS))
        for m in connection.execute(query).mappings():
            found[m["link_id"]] = _link_record(m)
    return found


def users_by_id(connection: Connection, ids: Collection[str]) -> dict[str, str | None]:
    """User id -> Salesforce user id, for the users with these ids the ledger knows."""
    found: dict[str, str | None] = {}
    for part in chunked(sorted(set(ids))):
        query = select(USERS.c.user_id, USERS.c.salesforce_user_id).where(
            USERS.c.user_id.in_(part), scope_of(connection).rows(USERS)
        )
        found.update({u: s for u, s in connection.execute(query)})
    return found


def _relink(
    connection: Connection, link_ids: Sequence[str], queue: Mapping[str, Any], now: datetime
) -> set[str]:
    """Queue links that forget their Mogli Event id; returns their live bookings (they follow the link).

    Live: synced, pending or failed, and the future Events that went with a deleted Mogli Event (as the
    inbound path's `recreate` does on the link's next booking; past meetings stay as they are).
    """
    bookings: set[str] = set()
    scope = scope_of(connection)
    for part in chunked(link_ids):
        values = {**queue, "version": LINKS.c.version + 1, "mogli_event_id": None}
        connection.execute(update(LINKS).where(LINKS.c.link_id.in_(part), scope.rows(LINKS)).values(values))
        went = and_(
            ACTIVITIES.c.state == A.DELETED_IN_SALESFORCE.value,
            ACTIVITIES.c.error_code == MOGLI_EVENT_DELETED,
            ACTIVITIES.c.start_at > now,
        )
        live = ACTIVITIES.c.link_id.in_(part) & or_(ACTIVITIES.c.state.in_(_RELINK_STATES), went)
        live &= ACTIVITIES.c.source_deleted.is_(False) & scope.rows(ACTIVITIES)
        bookings |= {k for (k,) in connection.execute(select(ACTIVITIES.c.booking_id).where(live))}
    return bookings


def _held(connection: Connection, scope: OrgScope, table: Any, key: Any, ids: Collection[str]) -> set[str]:
    """The ids among `ids` of rows the scope holds (all of them for every org: today's behaviour)."""
    if scope.every:
        return set(ids)
    found: set[str] = set()
    for part in chunked(sorted(set(ids))):
        found |= {k for (k,) in connection.execute(select(key).where(key.in_(part), scope.rows(table)))}
    return found


def requeue_drifted(
    connection: Connection,
    *,
    booking_ids: Collection[str],
    link_ids: Collection[str],
    relink_ids: Collection[str],
    now: datetime,
    run_id: int,
) -> int:
    """Push rows again at a new version; `relink_ids` also forget their Mogli Event id and resend bookings.

    Returns how many rows were queued. Each queued row gets a journal entry naming the run.
    """
    queue: dict[str, Any] = {
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "error_code": None,
        "updated_at": now,
    }
    scope = scope_of(connection)
    relink = _held(connection, scope, LINKS, LINKS.c.link_id, relink_ids)
    bookings = _held(connection, scope, ACTIVITIES, ACTIVITIES.c.booking_id, booking_ids)
    bookings |= _relink(connection, sorted(relink), queue, now)
    links = _held(connection, scope, LINKS, LINKS.c.link_id, link_ids) - relink
    for table, key, ids in (
        (LINKS, LINKS.c.link_id, sorted(links)),
        (ACTIVITIES, ACTIVITIES.c.booking_id, sorted(bookings)),
    ):
        for part in chunked(ids):
            values = {**queue, "version": table.c.version + 1}
            connection.execute(update(table).where(key.in_(part)).values(values))
    keys = [("link", k) for k in sorted({*links, *relink})] + [("activity", k) for k in sorted(bookings)]
    entries = [
        JournalEntry(now, Direction.RECONCILE, entity, k, "reconcile.requeue", {"run_id": run_id})
        for entity, k in keys
    ]
    append_journal(connection, entries)
    return len(entries)


def mark_deleted(connection: Connection, salesforce_ids: Collection[str], now: datetime, run_id: int) -> int:
    """Rows whose record a person deleted and the policy keeps deleted; returns how many rows changed."""
    return mark_deleted_in_salesforce(connection, salesforce_ids, now, reason=f"reconcile run {run_id}")


def accept_owners(connection: Connection, owners: Mapping[str, str], now: datetime, run_id: int) -> int:
    """Record Event owners a person set in Salesforce (the owner policy accepts them); returns how many."""
    entries = []
    scope = scope_of(connection)
    for booking_id, owner_id in sorted(owners.items()):
        where = (ACTIVITIES.c.booking_id == booking_id) & scope.rows(ACTIVITIES)
        done = connection.execute(
            update(ACTIVITIES).where(where).values(owner_salesforce_id=owner_id, updated_at=now)
        )
        if done.rowcount == 0 and not scope.every:
            continue
        detail = {"run_id": run_id, "owner_id": owner_id, "policy": "accept"}
        entries.append(
            JournalEntry(now, Direction.RECONCILE, "activity", booking_id, "reconcile.owner_accepted", detail)
        )
    append_journal(connection, entries)
    return len(entries)


def journal_mark(connection: Connection) -> int:
    """The newest journal entry's id: taken before a re-mirror reads the scheduler (0 when empty)."""
    return int(connection.execute(select(func.max(JOURNAL.c.id))).scalar() or 0)


def _streamed_since(connection: Connection, keys: Collection[MirrorKey], mark: int) -> set[MirrorKey]:
    """The keys the source changed (journal `source.*`) after `mark`; a TRUNCATE counts for every booking.

    An ingest that committed after the mark carries what the scheduler held at least as late as the
    re-mirror's read. One whose entries got ids below the mark (PostgreSQL hands sequence values out before
    commit) had its scheduler commit before the mark, so the re-mirror's read already holds its values.
    """
    found: set[MirrorKey] = set()
    for entity in sorted({e for e, _ in keys}):
        ids = sorted({k for e, k in keys if e == entity})
        for part in chunked([*ids, "*"]):
            query = select(JOURNAL.c.entity_key).where(
                JOURNAL.c.id > mark,
                JOURNAL.c.entity == entity,
                JOURNAL.c.entity_key.in_(part),
                JOURNAL.c.action.like("source.%"),
            )
            found |= {(entity, k) for (k,) in connection.execute(query)}
        if (entity, "*") in found:
            found |= {(entity, k) for k in ids}
    return found


def _lock_mirror(connection: Connection) -> None:
    """Keep the ingestor out until this transaction ends (SQLite: BEGIN IMMEDIATE already does)."""
    if connection.dialect.name == "postgresql":
        tables = ", ".join(t.name for t in (USERS, LINKS, ACTIVITIES))
        connection.exec_driver_sql(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE")


def mirror_key(change: SourceChange) -> MirrorKey:
    """The journal entity and row id a source change is journaled under."""
    return _ENTITY[change.table], change.row.id if change.row is not None else "*"


_TABLE = {"user": (USERS, "user_id"), "link": (LINKS, "link_id"), "activity": (ACTIVITIES, "booking_id")}


def _foreign(connection: Connection, keys: Collection[MirrorKey]) -> set[MirrorKey]:
    """The keys whose ledger row belongs to an org outside the scope (none for every org)."""
    scope = scope_of(connection)
    if scope.every:
        return set()
    found: set[MirrorKey] = set()
    for entity, (table, column) in _TABLE.items():
        ids = sorted({k for e, k in keys if e == entity and k != "*"})
        for part in chunked(ids):
            query = select(table.c[column], table.c.org_id).where(table.c[column].in_(part))
            found |= {(entity, k) for k, org in connection.execute(query) if not scope.holds(org)}
    return found


def remirror(
    connection: Connection, changes: Sequence[SourceChange], mark: int, now: datetime
) -> set[MirrorKey]:
    """Apply scheduler rows read after `mark` through the ordinary ingest, as a snapshot at the stored source
    position (the checkpoint does not move), leaving out every row the stream changed since `mark`: the
    ledger already holds a version at least as new, and (scoped) every row the ledger holds in another org.
    Returns the keys left out.
    """
    _lock_mirror(connection)
    keys = {mirror_key(c) for c in changes}
    newer = _streamed_since(connection, keys, mark) | _foreign(connection, keys)
    kept = tuple(c for c in changes if mirror_key(c) not in newer)
    if kept:
        stored = read_position(connection, SOURCE_STREAM)
        txn = SourceTransaction(
            end_lsn=int(stored) if stored else 0, commit_time=now, changes=kept, snapshot=True
        )
        apply_batch(connection, IngestBatch((txn,), now))
    return {mirror_key(c) for c in changes} & newer


def record_chunk(
    connection: Connection, run_id: int, items: Sequence[DriftItem], summary: JsonObject
) -> None:
    """Store a chunk's drift and the run's progress together: a crash repeats the chunk, never half of it."""
    add_drift(connection, items)
    where = (RUNS.c.id == run_id) & scope_of(connection).rows(RUNS)
    connection.execute(update(RUNS).where(where).values(summary=dict(summary)))


def find_resumable(connection: Connection, scope: JsonObject, dry_run: bool) -> ReconciliationRun | None:
    """The newest run with this scope that stopped before its last chunk, or None."""
    query = (
        select(RUNS)
        .where(
            RUNS.c.state.in_(RESUMABLE_STATES),
            RUNS.c.dry_run.is_(dry_run),
            scope_of(connection).rows(RUNS),
        )
        .order_by(RUNS.c.id.desc())
    )
    for m in connection.execute(query).mappings():
        if dict(m["scope"]) == dict(scope):
            return ReconciliationRun(**dict(m))
    return None


def resume_run(connection: Connection, run_id: int) -> None:
    """Mark a paused run running again."""
    where = (RUNS.c.id == run_id) & scope_of(connection).rows(RUNS)
    connection.execute(update(RUNS).where(where).values(state="running", finished_at=None))
