"""Applying decoded source transactions to the ledger: mirror upserts and outbox queueing, in bulk.

Everything here runs inside the caller's single database transaction, together with the source
checkpoint, so a batch is either wholly in the ledger or not at all. Rows are changed in a working copy
(see workset.py) in source order; a TRUNCATE of bookings flushes what came before it and then updates
the table in one statement.

A row is queued (state 'pending', version + 1, attempts 0) only when the change matters to Salesforce:
a new booking, a changed mirrored column, a delete, or any source update of a 'failed' booking. An UPDATE
that touches only columns the ledger does not mirror (invitee name, updated_at) queues nothing, and a
replayed snapshot chunk is a no-op. When a failed link goes back to pending (its owner got connected),
its failed activities go with it: most of them failed because their link could not be written.

Orgs (CONTRACT §9): a user's org is its organization (NULL: the default org). A link's org is its owner's
until its Mogli Event is written, then frozen; an activity's is its link's until its Event is written. When a
user moves, its unwritten links follow with their unwritten activities. Organizations and connections go to
the `orgs` table (ingest_orgs.py). With tenancy off every organization_id is NULL and so is every org_id.
(Over 400 lines: the one transaction that makes a source batch durable, users, links and bookings in source
order, reads best whole.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from bridge.ledger.checkpoints import (
    SOURCE_AHEAD_STREAM,
    SOURCE_STREAM,
    format_ahead,
    parse_ahead,
    read_source_positions,
    write_position,
)
from bridge.ledger.ingest_orgs import OrgChanges
from bridge.ledger.journal import outbound_row
from bridge.ledger.tables import ACTIVITIES, JOURNAL, LINKS, USERS
from bridge.ledger.workset import Row, WorkingTable, insert_many
from bridge.records.ledger import ActivitySyncState as A
from bridge.records.ledger import IngestBatch, IngestSummary
from bridge.records.ledger import LinkSyncState as L
from bridge.records.source import (
    BookingRow,
    ChangeOp,
    LinkRow,
    SourceChange,
    SourceTable,
    SourceTransaction,
    UserRow,
)

USER_NOT_CONNECTED = "USER_NOT_CONNECTED"
CROSS_ORG_USER = "CROSS_ORG_USER"
# Rule failures that wait for a user's row to change (connecting Salesforce, moving to the booking's org).
USER_WAITING_CODES = (USER_NOT_CONNECTED, CROSS_ORG_USER)
SOURCE_TRUNCATED = "SOURCE_TRUNCATED"
# Activities a link edit or an owner change sends again (not cancelled, skipped or gone from Salesforce).
REQUEUE_STATES = (A.SYNCED.value, A.FAILED.value, A.PENDING.value)
# Columns of the Mogli Event; a change to one of them is pushed (is_active is mirror only).
LINK_PUSH_COLUMNS = ("title", "description", "owner_user_id", "link_type")

LOOKUP_CHUNK = 500  # ids per IN list

# ledger column -> source row attribute
_LINK_FIELDS = {
    "link_type": "link_type",
    "owner_user_id": "owner_id",
    "title": "title",
    "description": "description",
    "duration_minutes": "duration_minutes",
    "is_active": "is_active",
}
_BOOKING_FIELDS = {
    "link_id": "link_id",
    "assigned_user_id": "assigned_user_id",
    "start_at": "start_at",
    "end_at": "end_at",
    "status": "status",
    "related_record_id": "related_record_id",
}
_ENTITY = {
    SourceTable.ORGANIZATIONS: "org",
    SourceTable.CONNECTIONS: "org",
    SourceTable.USERS: "user",
    SourceTable.LINKS: "link",
    SourceTable.BOOKINGS: "activity",
}
_SYNC_DEFAULTS: dict[str, Any] = {
    "version": 0,
    "synced_version": None,
    "attempts": 0,
    "last_error": None,
    "error_code": None,
    "next_attempt_at": None,
    "synced_at": None,
    "source_deleted": False,
}

Item = tuple[SourceTransaction, SourceChange]


@dataclass(slots=True)
class _Totals:
    """What the segments of one batch found, for its IngestSummary."""

    pending_work: bool = False
    orgs_with_work: set[str | None] = field(default_factory=set)
    orgs_changed: bool = False


def apply_batch(connection: Connection, batch: IngestBatch) -> IngestSummary:
    """Apply a batch in order, then advance the 'source' checkpoint; the caller owns the transaction.

    A transaction at or below the checkpoint, or remembered as applied ahead of it, was applied before
    (a replay after a restart) and is skipped."""
    stored_text, ahead_text = read_source_positions(connection)
    stored = int(stored_text) if stored_text else None  # "" = reset by `setup`
    ahead = parse_ahead(ahead_text)
    counts: dict[SourceTable, int] = defaultdict(int)
    skipped = 0
    last_lsn: int | None = None
    totals = _Totals()
    items: list[Item] = []
    for txn in batch.transactions:
        if not txn.snapshot or txn.last_snapshot_chunk:
            # A snapshot is only a position once all of it is in: a crash before its last chunk must
            # re-read it (the source then takes a new snapshot), never resume the stream past it.
            last_lsn = txn.end_lsn if last_lsn is None else max(last_lsn, txn.end_lsn)
        if not txn.snapshot and ((stored is not None and txn.end_lsn <= stored) or txn.end_lsn in ahead):
            skipped += 1
            continue
        if not txn.snapshot:
            ahead.add(txn.end_lsn)
        for change in txn.changes:
            counts[change.table] += 1
            if change.op is ChangeOp.TRUNCATE and change.table is SourceTable.BOOKINGS:
                _Segment(connection, batch, totals).run(items)
                items = []
                _truncate_bookings(connection, txn, batch.now)
            else:
                items.append((txn, change))
    _Segment(connection, batch, totals).run(items)
    if batch.reordered:
        last_lsn = batch.position
    checkpoint = stored_text
    if last_lsn is not None and (stored is None or last_lsn > stored):
        checkpoint = str(last_lsn)
        write_position(connection, SOURCE_STREAM, checkpoint, batch.now)
    moved = int(checkpoint) if checkpoint else None
    still_ahead = format_ahead(lsn for lsn in ahead if moved is None or lsn > moved)
    if still_ahead != (ahead_text or ""):
        write_position(connection, SOURCE_AHEAD_STREAM, still_ahead, batch.now)
    return IngestSummary(
        users=counts[SourceTable.USERS],
        links=counts[SourceTable.LINKS],
        bookings=counts[SourceTable.BOOKINGS],
        skipped_txns=skipped,
        pending_work=totals.pending_work,
        checkpoint=checkpoint,
        orgs_with_work=frozenset(totals.orgs_with_work),
        orgs_changed=totals.orgs_changed,
    )


def link_orgs(connection: Connection, link_ids: list[str]) -> dict[str, str | None]:
    """The org of each known link among `link_ids` (for sorting the read-ahead by org)."""
    found: dict[str, str | None] = {}
    for start in range(0, len(link_ids), LOOKUP_CHUNK):
        chunk = link_ids[start : start + LOOKUP_CHUNK]
        query = select(LINKS.c.link_id, LINKS.c.org_id).where(LINKS.c.link_id.in_(chunk))
        found.update((str(link), org) for link, org in connection.execute(query))
    return found


def _truncate_bookings(connection: Connection, txn: SourceTransaction, now: datetime) -> None:
    """TRUNCATE is not a cancellation of every meeting: nothing is deleted in Salesforce.

    Every live booking fails with the reason, so an operator sees it; re-inserting a booking (a reload)
    syncs it again, and `retry` or `reconcile` apply the removal deliberately.
    """
    present = ACTIVITIES.c.source_deleted.is_(False)
    live = ACTIVITIES.c.state.in_(REQUEUE_STATES)
    failed = {
        "source_deleted": True,
        "state": A.FAILED.value,
        "error_code": SOURCE_TRUNCATED,
        "last_error": (
            "the bookings table was truncated in the scheduler; the Event was left in Salesforce "
            "(re-insert the booking to sync it again, or retry it to delete the Event)"
        ),
        "next_attempt_at": None,
        "source_lsn": txn.end_lsn,
        # A new version: an outcome of a push in flight belongs to the version before the truncate and must
        # not mark the row synced (or overwrite the reason) behind it.
        "version": ACTIVITIES.c.version + 1,
        "updated_at": now,
    }
    truncated = connection.execute(update(ACTIVITIES).where(present, live).values(failed)).rowcount
    connection.execute(
        update(ACTIVITIES).where(present, ~live).values(source_deleted=True, updated_at=now),
    )
    detail = {**_detail(txn), "bookings_failed": truncated}
    entry = {**outbound_row(now, "activity", "*", "source.truncate", detail), "org_id": None}
    insert_many(connection, JOURNAL, [entry])


def _detail(txn: SourceTransaction) -> dict[str, Any]:
    detail: dict[str, Any] = {"lsn": txn.end_lsn, "xid": txn.xid}
    if txn.snapshot:
        detail["snapshot"] = True
    return detail


def _merge(previous: Row | None, row: LinkRow | BookingRow, fields: dict[str, str]) -> Row:
    """The row's mirrored values; columns pgoutput did not send keep what the ledger knew."""
    merged: Row = {}
    for column, attribute in fields.items():
        keep = attribute in row.unchanged and previous is not None
        merged[column] = previous[column] if keep and previous is not None else getattr(row, attribute)
    merged["problems"] = list(row.problems)
    return merged


class _Segment:
    """The changes between two bulk statements: load what they touch, apply in order, write back."""

    def __init__(self, connection: Connection, batch: IngestBatch, totals: _Totals) -> None:
        self.connection = connection
        self.totals = totals
        self.now = batch.now
        self.quiet = batch.quiet_booking_ids
        self.users = WorkingTable(USERS, "user_id")
        self.links = WorkingTable(LINKS, "link_id")
        self.activities = WorkingTable(ACTIVITIES, "booking_id")
        self.by_link: dict[str, set[str]] = defaultdict(set)
        self.by_assignee: dict[str, set[str]] = defaultdict(set)
        self.by_owner: dict[str, set[str]] = defaultdict(set)
        self.orgs = OrgChanges(batch.now)
        self.journal: list[Row] = []
        self.queued: list[Row] = []

    def run(self, items: Sequence[Item]) -> None:
        """Apply the items, write them back, and add what they did to the batch's totals."""
        if not items:
            return
        self._preload(items)
        for txn, change in items:
            self._apply(txn, change)
        for table in (self.users, self.links, self.activities):
            table.flush(self.connection)
        self.orgs.flush(self.connection)
        insert_many(self.connection, JOURNAL, self.orgs.journal + self.journal)
        self.totals.pending_work |= bool(self.queued)
        self.totals.orgs_with_work.update(row["org_id"] for row in self.queued)
        self.totals.orgs_changed |= self.orgs.changed

    # ---------------------------------------------------------------- loading

    def _preload(self, items: Sequence[Item]) -> None:
        """Load every row the items can touch, including the rows a cascade may requeue."""
        user_ids: set[str] = set()
        owner_ids: set[str] = set()
        link_ids: set[str] = set()
        edited_links: set[str] = set()
        booking_ids: set[str] = set()
        for _txn, change in items:
            row = change.row
            if isinstance(row, UserRow):
                user_ids.add(row.id)
            elif isinstance(row, LinkRow):
                link_ids.add(row.id)
                edited_links.add(row.id)
                if row.owner_id is not None:
                    owner_ids.add(row.owner_id)
            elif isinstance(row, BookingRow):
                booking_ids.add(row.id)
                if row.link_id is not None:
                    link_ids.add(row.link_id)
        c = self.connection
        self.orgs.preload(c, [change for _txn, change in items])
        self.users.load_keys(c, user_ids | owner_ids)
        self.links.load_keys(c, link_ids)
        # Links new to the ledger: a booking that arrived before its link books it.
        unseen = edited_links - self.links.rows.keys()
        self.activities.load_where(c, "link_id", unseen, ACTIVITIES.c.booking_id.is_not(None))
        self.links.load_where(c, "owner_user_id", user_ids, LINKS.c.link_id.is_not(None))
        owned = {k for k, r in self.links.rows.items() if r["owner_user_id"] in user_ids}
        self.activities.load_keys(c, booking_ids)
        future = and_(ACTIVITIES.c.start_at > self.now, ACTIVITIES.c.state.in_(REQUEUE_STATES))
        failed = ACTIVITIES.c.state == A.FAILED.value
        self.activities.load_where(c, "link_id", edited_links | owned, or_(future, failed))
        waiting = and_(failed, ACTIVITIES.c.error_code.in_(USER_WAITING_CODES))
        self.activities.load_where(c, "assigned_user_id", user_ids, waiting)
        self.links.load_keys(c, (r["link_id"] for r in self.activities.rows.values() if r["link_id"]))
        for link in self.links.rows.values():
            self._index_link(link, None)
        for activity in self.activities.rows.values():
            self._index_activity(activity, None, None)

    def _index_link(self, link: Row, old_owner: str | None) -> None:
        if old_owner is not None:
            self.by_owner[old_owner].discard(link["link_id"])
        if link["owner_user_id"] is not None:
            self.by_owner[link["owner_user_id"]].add(link["link_id"])

    def _index_activity(self, activity: Row, old_link: str | None, old_assignee: str | None) -> None:
        key = activity["booking_id"]
        if old_link is not None:
            self.by_link[old_link].discard(key)
        if old_assignee is not None:
            self.by_assignee[old_assignee].discard(key)
        if activity["link_id"] is not None:
            self.by_link[activity["link_id"]].add(key)
        if activity["assigned_user_id"] is not None:
            self.by_assignee[activity["assigned_user_id"]].add(key)

    # ---------------------------------------------------------------- applying

    def _apply(self, txn: SourceTransaction, change: SourceChange) -> None:
        entity = _ENTITY[change.table]
        row = change.row
        key = row.id if row is not None else "*"
        detail = _detail(txn)
        if entity == "org":
            self.orgs.apply(change, detail)
        elif isinstance(row, UserRow) and change.op is not ChangeOp.DELETE:
            self._upsert_user(row)
        elif isinstance(row, LinkRow) and change.op is ChangeOp.DELETE:
            self._delete_link(row.id)
        elif isinstance(row, LinkRow):
            self._upsert_link(row)
        elif isinstance(row, BookingRow):
            if change.op is ChangeOp.DELETE:
                self._delete_booking(row.id, txn)
            elif not self._upsert_booking(row, txn):
                detail["skipped"] = True
        entry = outbound_row(self.now, entity, key, f"source.{change.op.value}", detail)
        self.journal.append({**entry, "org_id": self._org_of(entity, key)})

    def _org_of(self, entity: str, key: str) -> str | None:
        """The org_id of the row a journal entry concerns (an org's own id for an org)."""
        if entity == "org":
            return None if key == "*" else key
        table = {"user": self.users, "link": self.links, "activity": self.activities}[entity]
        row = table.get(key)
        return row["org_id"] if row is not None else None

    def _queue(self, row: Row) -> None:
        """Make a link or activity pending work at a new version."""
        row.update(state="pending", version=row["version"] + 1, attempts=0, next_attempt_at=None)
        row["updated_at"] = self.now
        self.queued.append(row)

    def _queue_activity(self, activity: Row, lsn: int | None = None) -> None:
        self._queue(activity)
        if lsn is not None:
            activity["source_lsn"] = lsn

    def _requeue_future(self, link_id: str) -> None:
        """Send again the link's activities that have not started yet."""
        for key in self.by_link.get(link_id, ()):
            activity = self.activities.rows[key]
            start = activity["start_at"]
            if (
                start is not None
                and start > self.now
                and activity["state"] in REQUEUE_STATES
                and activity["error_code"] != SOURCE_TRUNCATED
            ):
                self._queue_activity(activity)

    def _upsert_user(self, row: UserRow) -> None:
        previous = self.users.get(row.id)
        before = previous["salesforce_user_id"] if previous is not None else None
        value = before if "salesforce_user_id" in row.unchanged else row.salesforce_user_id
        org_before = previous["org_id"] if previous is not None else None
        org = org_before if "organization_id" in row.unchanged else row.organization_id
        if previous is None:
            self.users.put(
                {"user_id": row.id, "salesforce_user_id": value, "org_id": org, "updated_at": self.now}
            )
        elif value != before or org != org_before:
            previous.update(salesforce_user_id=value, org_id=org, updated_at=self.now)
        if org != org_before:
            for link_id in list(self.by_owner.get(row.id, ())):
                self._follow_owner(self.links.rows[link_id])
        if value != before or org != org_before:
            self._user_connection_changed(row.id)

    def _user_org(self, user_id: str | None) -> str | None:
        """A user's org_id (None: the default org, also for a user the ledger does not know)."""
        user = self.users.get(user_id)
        return user["org_id"] if user is not None else None

    def _follow_owner(self, link: Row) -> None:
        """An unwritten link takes its owner's org, with its unwritten activities; a written one keeps its."""
        org = self._user_org(link["owner_user_id"])
        if link["mogli_event_id"] is not None or link["org_id"] == org:
            return
        link.update(org_id=org, updated_at=self.now)
        if link["state"] != L.UNBOOKED:
            self._queue(link)  # a push in flight in the old org must not settle the row
        link_id = link["link_id"]
        loaded = set(self.activities.rows)
        self.activities.load_where(self.connection, "link_id", [link_id], ACTIVITIES.c.activity_id.is_(None))
        for key in self.activities.rows.keys() - loaded:
            self._index_activity(self.activities.rows[key], None, None)
        for key in list(self.by_link.get(link_id, ())):
            self._follow_link(self.activities.rows[key], link)

    def _follow_link(self, activity: Row, link: Row | None) -> None:
        """An activity without an Event takes its link's org (queued again if it was waiting or failed)."""
        org = link["org_id"] if link is not None else None
        if activity["activity_id"] is not None or activity["org_id"] == org:
            return
        activity.update(org_id=org, updated_at=self.now)
        if activity["state"] in (A.PENDING, A.FAILED) and activity["error_code"] != SOURCE_TRUNCATED:
            self._queue_activity(activity)

    def _user_connection_changed(self, user_id: str) -> None:
        """A user's Salesforce connection changed: their Mogli Events and waiting Events go again."""
        touched: set[str] = set(self.by_assignee.get(user_id, ()))
        for link_id in list(self.by_owner.get(user_id, ())):
            link = self.links.rows[link_id]
            touched |= self.by_link.get(link_id, set())
            if link["state"] == L.FAILED:
                self._queue(link)
                self._requeue_failed(link_id)
            elif link["state"] == L.SYNCED:
                self._queue(link)
                self._requeue_future(link_id)
        for key in touched:
            activity = self.activities.rows[key]
            if activity["state"] == A.FAILED and activity["error_code"] in USER_WAITING_CODES:
                self._queue_activity(activity)

    def _requeue_failed(self, link_id: str) -> None:
        """A failed link goes again: so do its activities that failed (most failed because of it)."""
        for key in self.by_link.get(link_id, ()):
            activity = self.activities.rows[key]
            if activity["state"] == A.FAILED and activity["error_code"] != SOURCE_TRUNCATED:
                self._queue_activity(activity)

    def _upsert_link(self, row: LinkRow) -> None:
        previous = self.links.get(row.id)
        merged = _merge(previous, row, _LINK_FIELDS)
        if previous is None:
            link = self.links.put(
                {
                    "link_id": row.id,
                    **merged,
                    **_SYNC_DEFAULTS,
                    "owner_salesforce_id": None,
                    "mogli_event_id": None,
                    "state": L.UNBOOKED.value,
                    "first_booked_at": None,
                    "org_id": self._user_org(merged["owner_user_id"]),
                    "updated_at": self.now,
                }
            )
            self._index_link(link, None)
            for key in list(self.by_link.get(row.id, ())):
                self._follow_link(self.activities.rows[key], link)
            if any(self.activities.rows[k]["state"] != A.SKIPPED for k in self.by_link.get(row.id, ())):
                self._first_booking(link)
                self._requeue_failed(row.id)  # they failed for want of this link
            return
        pushed = any(previous[c] != merged[c] for c in LINK_PUSH_COLUMNS)
        changed = previous["source_deleted"] or any(previous[c] != v for c, v in merged.items())
        if not changed:
            return
        old_owner = previous["owner_user_id"]
        previous.update(merged, source_deleted=False, updated_at=self.now)
        self._index_link(previous, old_owner)
        if previous["owner_user_id"] != old_owner:
            self._follow_owner(previous)
        if pushed and previous["state"] != L.UNBOOKED:
            self._queue(previous)
            self._requeue_future(row.id)

    def _first_booking(self, link: Row) -> None:
        if link["state"] == L.UNBOOKED:
            self._queue(link)
            link["first_booked_at"] = link["first_booked_at"] or self.now

    def _delete_link(self, link_id: str) -> None:
        link = self.links.get(link_id)
        if link is not None and not link["source_deleted"]:
            link.update(source_deleted=True, updated_at=self.now)

    def _upsert_booking(self, row: BookingRow, txn: SourceTransaction) -> bool:
        """Mirror the booking and queue it; returns False when it is stored as skipped."""
        previous = self.activities.get(row.id)
        merged = _merge(previous, row, _BOOKING_FIELDS)
        quiet = row.id in self.quiet and (previous is None or previous["state"] == A.SKIPPED)
        if previous is None:
            activity = self.activities.put(self._new_activity(row.id, merged, quiet))
            link = self.links.get(activity["link_id"])
            activity["org_id"] = link["org_id"] if link is not None else None
            self._index_activity(activity, None, None)
            if not quiet:
                self._queue_activity(activity, txn.end_lsn)
                self._first_booking_of(activity)
            return not quiet
        changed = previous["source_deleted"] or any(previous[c] != v for c, v in merged.items())
        old_link, old_assignee = previous["link_id"], previous["assigned_user_id"]
        if changed:
            previous.update(merged, source_deleted=False, updated_at=self.now)
            self._index_activity(previous, old_link, old_assignee)
            if previous["link_id"] != old_link:
                self._follow_link(previous, self.links.get(previous["link_id"]))
        if quiet:
            return False
        if changed or (not txn.snapshot and previous["state"] == A.FAILED):
            self._queue_activity(previous, txn.end_lsn)
            self._first_booking_of(previous)
        return bool(previous["state"] != A.SKIPPED)

    def _new_activity(self, booking_id: str, merged: Row, quiet: bool) -> Row:
        return {
            "booking_id": booking_id,
            **merged,
            **_SYNC_DEFAULTS,
            "activity_id": None,
            "owner_salesforce_id": None,
            "who_id": None,
            "what_id": None,
            "state": A.SKIPPED.value if quiet else A.PENDING.value,
            "source_lsn": None,
            "org_id": None,
            "updated_at": self.now,
        }

    def _first_booking_of(self, activity: Row) -> None:
        link = self.links.get(activity["link_id"])
        if link is not None:
            self._first_booking(link)

    def _delete_booking(self, booking_id: str, txn: SourceTransaction) -> None:
        activity = self.activities.get(booking_id)
        if activity is None or activity["source_deleted"]:
            return
        activity.update(source_deleted=True, updated_at=self.now)
        if activity["state"] != A.SKIPPED:
            self._queue_activity(activity, txn.end_lsn)
