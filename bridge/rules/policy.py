"""Inbound policy: what a Salesforce-side change means for the ledger, Salesforce and the scheduler.

Pure functions: no clock, no I/O, no logging. `decide()` takes one decoded change event, what the ledger
knows of the records it names, and the configured options, and returns a `Decision` that `sync/inbound.py`
carries out. The defaults and their reasons are in the README ("Changes made in Salesforce").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from bridge.records.inbound import (
    ActivityChange,
    Cascade,
    ChangeEntity,
    ChangeType,
    Field,
    KnownActivity,
    KnownLink,
    LinkChange,
    SalesforceChange,
)
from bridge.rules.precision import same_instant

DELETED_IN_SALESFORCE = "deleted_in_salesforce"
SYNCED = "synced"
PENDING = "pending"
CANCELLED = "cancelled"
ROUND_ROBIN = "round_robin"

OnActivityDeleted = Literal["keep_deleted", "recreate"]
OnTimeChanged = Literal["restore", "write_back"]
OnOwnerChanged = Literal["accept", "write_back"]
OnMogliEventDeleted = Literal["recreate", "keep_deleted"]


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """The configurable rows of the policy (`[sync]` keys of the same names)."""

    client_name: str = "mogli-bridge"
    integration_user_id: str | None = None  # the user the bridge writes as (its token's identity)
    on_activity_deleted: OnActivityDeleted = "keep_deleted"
    on_time_changed: OnTimeChanged = "restore"
    on_owner_changed: OnOwnerChanged = "accept"
    on_mogli_event_deleted: OnMogliEventDeleted = "recreate"


class IgnoreReason(enum.StrEnum):
    """Why a change needs no action."""

    ECHO = (
        "echo"  # made by this bridge (commitUser is the integration user, or changeOrigin names our client)
    )
    UNCHANGED = "unchanged"  # its values equal what the ledger says we last wrote
    UNKNOWN_RECORD = "unknown_record"  # not a record the bridge wrote
    NOT_WATCHED = "not_watched"  # a change type or field the policy leaves alone
    ALREADY_APPLIED = "already_applied"  # the ledger already reflects it


class RereadKind(enum.StrEnum):
    """What to read again from Salesforce."""

    EVENTS = "events"  # Events by id
    MOGLI_EVENTS = "mogli_events"  # Mogli Events by id
    EVENTS_OF_LEADS = "events_of_leads"  # the Events the ledger wrote with these Leads as WhoId


@dataclass(frozen=True, slots=True)
class WriteBack:
    """A change to one booking in the scheduling database (None: leave the column alone)."""

    booking_id: str
    start_at: datetime | None = None
    end_at: datetime | None = None
    related_record_id: str | None = None
    assigned_salesforce_user_id: str | None = None  # resolved to a scheduler user by the caller


@dataclass(frozen=True, slots=True)
class Reread:
    """Records to read again (gap events, a converted Lead) and feed back through `decide()`."""

    kind: RereadKind
    record_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReconcileRequest:
    """A targeted reconciliation of one entity from a point in time (overflow, lost replay window)."""

    entity: ChangeEntity
    since: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything one change leads to; an empty decision with `ignored` set means nothing to do."""

    ignored: IgnoreReason | None = None
    activities: tuple[ActivityChange, ...] = ()
    links: tuple[LinkChange, ...] = ()
    write_backs: tuple[WriteBack, ...] = ()
    reread: Reread | None = None
    reconcile: ReconcileRequest | None = None

    @property
    def is_noop(self) -> bool:
        """True when nothing is to be written anywhere."""
        return not (self.activities or self.links or self.write_backs or self.reread or self.reconcile)


@dataclass(frozen=True, slots=True)
class Known:
    """What the ledger knows of the records a change names, keyed by Salesforce id and by External ID."""

    activities_by_sfid: Mapping[str, KnownActivity] = field(default_factory=dict)
    activities_by_booking: Mapping[str, KnownActivity] = field(default_factory=dict)
    links_by_sfid: Mapping[str, KnownLink] = field(default_factory=dict)
    links_by_link_id: Mapping[str, KnownLink] = field(default_factory=dict)


def is_echo(change_origin: str, client_name: str) -> bool:
    """True when `changeOrigin` names our client (`...;client=<name>`)."""
    wanted = f"client={client_name}"
    return any(part.strip() == wanted for part in change_origin.split(";"))


def is_own_change(change: SalesforceChange, options: PolicyOptions) -> bool:
    """Made by this bridge: committed by its integration user (documented, always set), or, as a further
    line, `changeOrigin` names our client (Salesforce sets it only for some APIs, never for Collections)."""
    own_user = options.integration_user_id is not None and change.commit_user == options.integration_user_id
    return own_user or is_echo(change.change_origin, options.client_name)


def is_persons_change(change: SalesforceChange, options: PolicyOptions) -> bool:
    """Surely made by someone else: committed by a user other than the integration user."""
    return (
        options.integration_user_id is not None
        and change.commit_user is not None
        and change.commit_user != options.integration_user_id
    )


def decide(change: SalesforceChange, known: Known, options: PolicyOptions) -> Decision:
    """The decision for one change event."""
    if is_own_change(change, options):
        return Decision(ignored=IgnoreReason.ECHO)
    if change.change_type is ChangeType.GAP_OVERFLOW:
        return Decision(reconcile=ReconcileRequest(change.entity, change.commit_time))
    if change.entity is ChangeEntity.LEAD:
        return _decide_lead(change)
    if change.change_type.is_gap:
        kind = RereadKind.MOGLI_EVENTS if change.entity is ChangeEntity.MOGLI_EVENT else RereadKind.EVENTS
        if change.entity not in (ChangeEntity.EVENT, ChangeEntity.MOGLI_EVENT):
            return Decision(ignored=IgnoreReason.NOT_WATCHED)
        return Decision(reread=Reread(kind, change.record_ids))
    if change.entity is ChangeEntity.EVENT:
        return _merge([_decide_event(change, rid, known, options) for rid in change.record_ids])
    if change.entity is ChangeEntity.MOGLI_EVENT:
        return _merge([_decide_mogli_event(change, rid, known, options) for rid in change.record_ids])
    return Decision(ignored=IgnoreReason.NOT_WATCHED)


def _merge(decisions: list[Decision]) -> Decision:
    """One decision for a change that named several records."""
    acting = [d for d in decisions if not d.is_noop]
    if not acting:
        return decisions[0] if decisions else Decision(ignored=IgnoreReason.UNKNOWN_RECORD)
    return Decision(
        activities=tuple(a for d in acting for a in d.activities),
        links=tuple(link for d in acting for link in d.links),
        write_backs=tuple(w for d in acting for w in d.write_backs),
    )


def _decide_lead(change: SalesforceChange) -> Decision:
    """A converted Lead (or a gap on Leads): re-read the Events written for those Leads."""
    converted = change.change_type is ChangeType.UPDATE and change.is_converted is True
    if converted or change.change_type.is_gap:
        return Decision(reread=Reread(RereadKind.EVENTS_OF_LEADS, change.record_ids))
    return Decision(ignored=IgnoreReason.NOT_WATCHED)


def _known_activity(change: SalesforceChange, record_id: str, known: Known) -> KnownActivity | None:
    by_id = known.activities_by_sfid.get(record_id)
    if by_id is not None:
        return by_id
    if change.external_id is not None:
        by_key = known.activities_by_booking.get(change.external_id)
        # An Event carrying our External ID but not the id we wrote is a copy: reconciliation's business.
        if by_key is not None and by_key.activity_id in (None, record_id):
            return by_key
    return None


def _decide_event(change: SalesforceChange, record_id: str, known: Known, options: PolicyOptions) -> Decision:
    activity = _known_activity(change, record_id, known)
    if activity is None:
        return Decision(ignored=IgnoreReason.UNKNOWN_RECORD)
    if change.change_type is ChangeType.DELETE:
        return _event_deleted(activity, record_id, options)
    if activity.state == DELETED_IN_SALESFORCE:
        if change.change_type is ChangeType.UNDELETE:
            restored = ActivityChange(
                activity.booking_id,
                "salesforce.event_undeleted",
                state=SYNCED,
                activity_id=record_id,
                detail=(("salesforce_id", record_id),),
            )
            return Decision(activities=(restored,))
        return Decision(ignored=IgnoreReason.NOT_WATCHED)
    return _event_values_changed(change, activity, record_id, options)


def _event_deleted(activity: KnownActivity, record_id: str, options: PolicyOptions) -> Decision:
    """A person deleted the Event: keep it deleted (a person chose to) or write it again."""
    if activity.state in (DELETED_IN_SALESFORCE, CANCELLED):
        return Decision(ignored=IgnoreReason.ALREADY_APPLIED)
    detail = (("salesforce_id", record_id), ("policy", options.on_activity_deleted))
    if options.on_activity_deleted == "recreate":
        change = ActivityChange(activity.booking_id, "salesforce.event_deleted", requeue=True, detail=detail)
    else:
        change = ActivityChange(
            activity.booking_id, "salesforce.event_deleted", state=DELETED_IN_SALESFORCE, detail=detail
        )
    return Decision(activities=(change,))


def _differs(change: SalesforceChange, name: Field, new: object, old: object) -> bool:
    if name not in change.present:
        return False
    if isinstance(new, datetime) and isinstance(old, datetime):
        return not same_instant(new, old)
    return new != old


def _event_values_changed(
    change: SalesforceChange, activity: KnownActivity, record_id: str, options: PolicyOptions
) -> Decision:
    """UPDATE (or CREATE/UNDELETE of a live record): compare with what we last wrote, field group by group."""
    parts = [_who_rule(change, activity)]
    if activity.state != PENDING:
        parts += [_time_rule(change, activity, options), _owner_rule(change, activity, options)]
    elif is_persons_change(change, options):
        # A person's edit (commitUser) to a row in flight: every rule applies, and a rule that changes the
        # booking also requeues the row, so the in-flight write (made before the edit) cannot land last.
        owner = _owner_rule(change, activity, options)
        parts += [
            _requeued(_time_rule(change, activity, options)),
            _requeued(owner) if owner.write_backs else owner,
        ]
    elif options.on_time_changed == "restore":
        # Nobody known made it (a re-read): a pending row may be in flight with a write Salesforce already
        # applied; requeueing it (a new version) makes sure the scheduler's time is written after the edit.
        # Owner and write-back rules wait: the row's own write may be what this shows.
        parts.append(_time_rule(change, activity, options))
    acting = [p for p in parts if not p.is_noop]
    if not acting:
        return Decision(ignored=IgnoreReason.UNCHANGED)
    return _merge(acting)


def _requeued(decision: Decision) -> Decision:
    """The decision with every activity change also putting its row back to pending at a new version."""
    activities = tuple(replace(a, requeue=True) for a in decision.activities)
    return replace(decision, activities=activities)


def _time_rule(change: SalesforceChange, activity: KnownActivity, options: PolicyOptions) -> Decision:
    """Start/end moved: the scheduler wins and the Event is restored, or the booking takes the new time."""
    moved_start = _differs(change, Field.START, change.start_at, activity.start_at)
    moved_end = _differs(change, Field.END, change.end_at, activity.end_at)
    if not (moved_start or moved_end):
        return Decision()
    start = change.start_at if moved_start else activity.start_at
    end = change.end_at if moved_end else activity.end_at
    detail = (
        ("policy", options.on_time_changed),
        ("start_at", start.isoformat() if start else ""),
        ("end_at", end.isoformat() if end else ""),
    )
    if options.on_time_changed == "write_back" and start is not None and end is not None and start < end:
        accepted = ActivityChange(
            activity.booking_id, "salesforce.time_changed", start_at=start, end_at=end, detail=detail
        )
        back = WriteBack(activity.booking_id, start_at=start, end_at=end)
        return Decision(activities=(accepted,), write_backs=(back,))
    restore = ActivityChange(activity.booking_id, "salesforce.time_changed", requeue=True, detail=detail)
    return Decision(activities=(restore,))


def _owner_rule(change: SalesforceChange, activity: KnownActivity, options: PolicyOptions) -> Decision:
    """Reassigned: accepted and recorded; for round robin optionally written back as the assigned user."""
    if (
        not _differs(change, Field.OWNER, change.owner_id, activity.owner_salesforce_id)
        or not change.owner_id
    ):
        return Decision()
    detail = (("policy", options.on_owner_changed), ("owner_id", change.owner_id))
    accepted = ActivityChange(
        activity.booking_id, "salesforce.owner_changed", owner_salesforce_id=change.owner_id, detail=detail
    )
    if options.on_owner_changed == "write_back" and activity.link_type == ROUND_ROBIN:
        back = WriteBack(activity.booking_id, assigned_salesforce_user_id=change.owner_id)
        return Decision(activities=(accepted,), write_backs=(back,))
    return Decision(activities=(accepted,))


def _who_rule(change: SalesforceChange, activity: KnownActivity) -> Decision:
    """WhoId re-pointed (Lead converted, Contacts merged): accepted, and the booking follows it."""
    moved_who = _differs(change, Field.WHO, change.who_id, activity.who_id)
    moved_what = _differs(change, Field.WHAT, change.what_id, activity.what_id)
    if moved_who and change.who_id is None:
        # The person was removed from the Event: nothing to follow, so the scheduler's person is restored.
        cleared: tuple[tuple[str, str], ...] = (("who_id", ""),)
        return Decision(
            activities=(
                ActivityChange(activity.booking_id, "salesforce.who_cleared", requeue=True, detail=cleared),
            )
        )
    if not (moved_who or moved_what):
        return Decision()
    who = change.who_id if moved_who else None
    what = change.what_id if moved_what else None
    detail = (("who_id", who or ""), ("what_id", what or ""))
    accepted = ActivityChange(
        activity.booking_id,
        "salesforce.who_changed" if moved_who else "salesforce.what_changed",
        who_id=who,
        what_id=what,
        related_record_id=who,
        detail=detail,
    )
    backs = (WriteBack(activity.booking_id, related_record_id=who),) if who else ()
    return Decision(activities=(accepted,), write_backs=backs)


def _known_link(change: SalesforceChange, record_id: str, known: Known) -> KnownLink | None:
    by_id = known.links_by_sfid.get(record_id)
    if by_id is not None:
        return by_id
    if change.external_id is not None:
        return known.links_by_link_id.get(change.external_id)
    return None


def _decide_mogli_event(
    change: SalesforceChange, record_id: str, known: Known, options: PolicyOptions
) -> Decision:
    link = _known_link(change, record_id, known)
    if link is None:
        return Decision(ignored=IgnoreReason.UNKNOWN_RECORD)
    detail = (("salesforce_id", record_id), ("policy", options.on_mogli_event_deleted))
    if change.change_type is ChangeType.DELETE:
        if link.state == DELETED_IN_SALESFORCE or link.mogli_event_id != record_id:
            return Decision(ignored=IgnoreReason.ALREADY_APPLIED)
        deleted = LinkChange(
            link.link_id,
            "salesforce.mogli_event_deleted",
            state=DELETED_IN_SALESFORCE,
            clear_mogli_event_id=True,
            cascade=Cascade.MARK_DELETED,
            detail=detail,
        )
        return Decision(links=(deleted,))
    if change.change_type is ChangeType.UNDELETE:
        if link.state != DELETED_IN_SALESFORCE:
            return Decision(ignored=IgnoreReason.ALREADY_APPLIED)
        restored = LinkChange(
            link.link_id,
            "salesforce.mogli_event_undeleted",
            state=SYNCED,
            mogli_event_id=record_id,
            cascade=Cascade.RESTORE,
            detail=detail[:1],
        )
        return Decision(links=(restored,))
    return Decision(ignored=IgnoreReason.NOT_WATCHED)
