"""The ledger's tables as SQLAlchemy 2 typed models; Alembic reads `Base.metadata`.

Every timestamp is timezone-aware UTC (`DateTime(timezone=True)`; on SQLite stored as naive UTC text and
handed back as aware UTC). Column reference, for analysts and the README:

orgs -- one row per customer org (CONTRACT §9) and one for the default org of [salesforce] ('default')
    org_id               the scheduler organization id (uuid text); 'default' for the org of [salesforce]
    name                 the organization's name (mirror)
    login_url            where its tokens are requested (mirror of salesforce_connections)
    username             its integration user: the JWT subject (mirror; not a secret)
    connection           'connected' | 'disconnected' as the source holds it (NULL: no connection row)
    salesforce_org_id    the org's 00D id, once a token named it
    instance_url         the org's instance URL, once a token named it
    state                'active' | 'paused' | 'disconnected'
    reason               why the org is paused or disconnected (readable, no secrets)
    api_used, api_limit  its daily API requests as its last Sforce-Limit-Info said
    state_since          when `state` last changed
    updated_at           last change of this row

workers -- one row per live bridge worker (several workers, issue 14; PostgreSQL ledger, tenancy on)
    worker_id            f"{host}-{pid}-{4 random hex}"
    host, pid            where it runs
    started_at           its first heartbeat
    heartbeat_at         its last heartbeat (the database's now())
    lease_until          heartbeat_at + its lease: past it the worker counts as dead
    reader               it holds the stream reader's lock and reads the change stream
    draining             it was stopped (SIGTERM) and hands its orgs over

org_leases -- which worker serves each org ('default' included): the fencing token of every org's writes
    org_id               the `orgs` key
    worker_id            the worker holding the lease (NULL: nobody)
    epoch                raised by every take; a worker writes for the org only at the epoch it took
    lease_until          the lease's end (the database's time; NULL: released)
    taken_at             when the holder took it

The tables below carry `org_id`: the organization the row belongs to, NULL for the default org.

users -- the scheduler's users as far as Salesforce cares (no email or name: personal data)
    user_id              scheduler user id (uuid text)
    org_id               the user's organization (NULL: the default org)
    salesforce_user_id   the connected Salesforce user (005...) exactly as the source holds it; NULL when none
    updated_at           last change of this row

links -- one row per scheduling link; mirror of the source row plus the sync state of its Mogli Event
    link_id              scheduler link id (uuid text); also the Mogli Event's External ID
    org_id               the org its records go to: its owner's, frozen once its Mogli Event is written
    link_type            'one_on_one' | 'round_robin' | 'rsvp' (as the source holds it, unchecked)
    owner_user_id        scheduler user who created the link
    owner_salesforce_id  OwnerId last written to the Mogli Event
    title                link title (mirror)
    description          link description (mirror)
    duration_minutes     link duration (mirror)
    is_active            link active flag (mirror; deactivation alone writes nothing)
    source_deleted       true once the link was deleted in the source
    problems             JSON list of values the source decoder could not convert
    mogli_event_id       Salesforce id of the link's Mogli_Event__c, once written
    state                'unbooked' (no booking yet, nothing to write) | 'pending' | 'synced' | 'failed' |
                         'deleted_in_salesforce'
    version              bumped on every change that needs a push
    synced_version       the version last written successfully (NULL: never)
    attempts             failed or retried push attempts since the last success
    last_error           readable reason of the last failure
    error_code           code of the last failure (Salesforce error code or a rule's code)
    next_attempt_at      earliest time of the next push attempt (NULL: as soon as possible)
    first_booked_at      when the link's first booking reached the ledger
    synced_at            last successful push
    updated_at           last change of this row

activities -- one row per booking; mirror of the source row plus the sync state of its Salesforce Event
    booking_id           scheduler booking id (uuid text); also the Event's External ID
    link_id              the booking's link (no foreign key: a booking may arrive before or without its link)
    org_id               the org its Event goes to (its link's)
    activity_id          Salesforce id of the Event (kept after a delete: the deleted Event's id)
    owner_salesforce_id  OwnerId last written to the Event
    who_id               WhoId last written (Contact or Lead)
    what_id              WhatId last written (the Mogli Event; NULL for Lead bookings)
    start_at, end_at     the booking's times (mirror)
    assigned_user_id     round robin: the selected user (mirror)
    status               'scheduled' | 'cancelled' (mirror, unchecked)
    related_record_id    Salesforce id of the related record (mirror, as the source holds it)
    problems             JSON list of values the source decoder could not convert
    source_deleted       true once the booking was deleted (or its table truncated) in the source
    state                'pending' | 'synced' | 'failed' | 'cancelled' (Event deleted or marked cancelled)
                         | 'deleted_in_salesforce' | 'skipped' (pre-existing; the backfill policy left it out)
    version              bumped on every change that needs a push
    synced_version       the version last written successfully (NULL: never)
    attempts             failed or retried push attempts since the last success
    last_error           readable reason of the last failure
    error_code           code of the last failure (a Salesforce or rule code, e.g. USER_NOT_CONNECTED)
    next_attempt_at      earliest time of the next push attempt (NULL: as soon as possible)
    source_lsn           end LSN (as a 64-bit integer) of the source transaction that last queued this row
    synced_at            last successful push
    updated_at           last change of this row

journal -- append-only: why every record looks as it does
    id                   increasing sequence number
    at                   when the entry was written
    org_id               the org the entry concerns (NULL: the default org, or none)
    direction            'outbound' | 'inbound' | 'reconcile' | 'admin'
    entity               'link' | 'activity' | 'user' | 'source' | ...
    entity_key           the entity's id (link id, booking id, user id; '*' for a whole table)
    action               what happened, e.g. 'source.update', 'salesforce.event_upserted'
    detail               JSON object: LSN and xid, rule, Salesforce ids, error

checkpoints -- stream positions, written in the same transaction as the work they cover
    stream               'source' (decimal LSN up to which everything is applied), 'source.ahead' (end LSNs
                         of transactions applied ahead of it, comma separated), a Salesforce channel (replay
                         id) of the default org, or 'org/<org_id>/<channel>' for a channel of another org
    position             the position, as text
    updated_at           last change

reconciliation_runs -- one row per reconcile run
    id, org_id, requested_by, scope (JSON options), dry_run, state ('running' | 'finished' | 'failed'),
    started_at, finished_at, summary (JSON counts)

drift -- what a reconcile run found
    id, run_id (-> reconciliation_runs.id), org_id, kind, link_id, booking_id, salesforce_id, detail (JSON),
    repaired (true when the run repaired it)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ACTIVITIES",
    "CHECKPOINTS",
    "DRIFT",
    "JOURNAL",
    "LINKS",
    "ORGS",
    "ORG_LEASES",
    "RUNS",
    "USERS",
    "WORKERS",
    "ActivityModel",
    "Base",
    "CheckpointModel",
    "DriftModel",
    "JournalModel",
    "LinkModel",
    "OrgLeaseModel",
    "OrgModel",
    "ReconciliationRunModel",
    "UserModel",
    "UtcDateTime",
    "WorkerModel",
]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps naive UTC text that sorts correctly)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; normalise to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Hand back aware UTC datetimes."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A 64-bit key that is still SQLite's rowid alias.
_BigKey = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base holding the ledger metadata."""

    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime(), str: Text()}


class OrgModel(Base):
    """A customer org and the bridge's state for it (see the module docstring for columns)."""

    __tablename__ = "orgs"

    org_id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str | None]
    login_url: Mapped[str | None]
    username: Mapped[str | None]
    connection: Mapped[str | None]
    salesforce_org_id: Mapped[str | None]
    instance_url: Mapped[str | None]
    state: Mapped[str]
    reason: Mapped[str | None]
    api_used: Mapped[int | None]
    api_limit: Mapped[int | None]
    state_since: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class UserModel(Base):
    """A scheduler user (see the module docstring for columns)."""

    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(primary_key=True)
    org_id: Mapped[str | None] = mapped_column(index=True)
    salesforce_user_id: Mapped[str | None]
    updated_at: Mapped[datetime]


class LinkModel(Base):
    """A scheduling link and its Mogli Event's sync state."""

    __tablename__ = "links"
    __table_args__ = (
        Index("ix_links_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_links_org_id_state", "org_id", "state"),
    )

    link_id: Mapped[str] = mapped_column(primary_key=True)
    org_id: Mapped[str | None]
    link_type: Mapped[str | None]
    owner_user_id: Mapped[str | None] = mapped_column(index=True)
    owner_salesforce_id: Mapped[str | None]
    title: Mapped[str | None]
    description: Mapped[str | None]
    duration_minutes: Mapped[int | None]
    is_active: Mapped[bool | None]
    source_deleted: Mapped[bool] = mapped_column(server_default=false())
    problems: Mapped[list[str]] = mapped_column(JSON)
    mogli_event_id: Mapped[str | None]
    state: Mapped[str]
    version: Mapped[int] = mapped_column(server_default="0")
    synced_version: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(server_default="0")
    last_error: Mapped[str | None]
    error_code: Mapped[str | None]
    next_attempt_at: Mapped[datetime | None]
    first_booked_at: Mapped[datetime | None]
    synced_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class ActivityModel(Base):
    """A booking and its Salesforce Event's sync state."""

    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_state_next_attempt_at", "state", "next_attempt_at"),
        # The push worker's claim: pending rows in the order they changed (migration 0003).
        Index("ix_activities_state_updated_at", "state", "updated_at", "booking_id"),
        Index("ix_activities_link_id", "link_id"),
        Index("ix_activities_assigned_user_id", "assigned_user_id"),
        # One org's claim (migration 0004).
        Index("ix_activities_org_id_state_updated_at", "org_id", "state", "updated_at", "booking_id"),
    )

    booking_id: Mapped[str] = mapped_column(primary_key=True)
    link_id: Mapped[str | None]
    org_id: Mapped[str | None]
    activity_id: Mapped[str | None] = mapped_column(index=True)
    owner_salesforce_id: Mapped[str | None]
    who_id: Mapped[str | None]
    what_id: Mapped[str | None]
    start_at: Mapped[datetime | None]
    end_at: Mapped[datetime | None]
    assigned_user_id: Mapped[str | None]
    status: Mapped[str | None]
    related_record_id: Mapped[str | None]
    problems: Mapped[list[str]] = mapped_column(JSON)
    source_deleted: Mapped[bool] = mapped_column(server_default=false())
    state: Mapped[str]
    version: Mapped[int] = mapped_column(server_default="0")
    synced_version: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(server_default="0")
    last_error: Mapped[str | None]
    error_code: Mapped[str | None]
    next_attempt_at: Mapped[datetime | None]
    source_lsn: Mapped[int | None] = mapped_column(BigInteger)
    synced_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class JournalModel(Base):
    """One append-only journal entry."""

    __tablename__ = "journal"
    __table_args__ = (
        Index("ix_journal_entity_entity_key", "entity", "entity_key"),
        Index("ix_journal_at", "at"),
    )

    id: Mapped[int] = mapped_column(_BigKey, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    org_id: Mapped[str | None]
    direction: Mapped[str]
    entity: Mapped[str]
    entity_key: Mapped[str]
    action: Mapped[str]
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class CheckpointModel(Base):
    """The position of one stream."""

    __tablename__ = "checkpoints"

    stream: Mapped[str] = mapped_column(primary_key=True)
    position: Mapped[str]
    updated_at: Mapped[datetime]


class ReconciliationRunModel(Base):
    """One reconcile run."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(_BigKey, primary_key=True, autoincrement=True)
    org_id: Mapped[str | None]
    requested_by: Mapped[str]
    scope: Mapped[dict[str, Any]] = mapped_column(JSON)
    dry_run: Mapped[bool]
    state: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DriftModel(Base):
    """One difference a reconcile run found."""

    __tablename__ = "drift"

    id: Mapped[int] = mapped_column(_BigKey, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        _BigKey, ForeignKey("reconciliation_runs.id", name="fk_drift_run_id"), index=True
    )
    org_id: Mapped[str | None]
    kind: Mapped[str]
    link_id: Mapped[str | None]
    booking_id: Mapped[str | None]
    salesforce_id: Mapped[str | None]
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    repaired: Mapped[bool] = mapped_column(server_default=false())


class WorkerModel(Base):
    """A bridge worker's membership (see the module docstring for columns)."""

    __tablename__ = "workers"

    worker_id: Mapped[str] = mapped_column(primary_key=True)
    host: Mapped[str]
    pid: Mapped[int]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    lease_until: Mapped[datetime]
    reader: Mapped[bool] = mapped_column(server_default=false())
    draining: Mapped[bool] = mapped_column(server_default=false())


class OrgLeaseModel(Base):
    """Which worker serves an org, at which epoch (see the module docstring for columns)."""

    __tablename__ = "org_leases"

    org_id: Mapped[str] = mapped_column(primary_key=True)
    worker_id: Mapped[str | None]
    epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")
    lease_until: Mapped[datetime | None]
    taken_at: Mapped[datetime | None]


# Core handles on the tables, for the bulk statements of the repository.
ORGS: Table = OrgModel.__table__  # type: ignore[assignment]
USERS: Table = UserModel.__table__  # type: ignore[assignment]
LINKS: Table = LinkModel.__table__  # type: ignore[assignment]
ACTIVITIES: Table = ActivityModel.__table__  # type: ignore[assignment]
JOURNAL: Table = JournalModel.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = CheckpointModel.__table__  # type: ignore[assignment]
RUNS: Table = ReconciliationRunModel.__table__  # type: ignore[assignment]
DRIFT: Table = DriftModel.__table__  # type: ignore[assignment]
WORKERS: Table = WorkerModel.__table__  # type: ignore[assignment]
ORG_LEASES: Table = OrgLeaseModel.__table__  # type: ignore[assignment]
