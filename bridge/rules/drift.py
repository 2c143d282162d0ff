"""Drift: how the scheduling database, the ledger and Salesforce disagree, classified from three snapshots.

Pure: no clock, no I/O, no logging. The expected Salesforce values come from the same rules the pusher
follows (`mapping.event_action` / `mapping.mogli_event_for`) applied to the ledger's view, so a record that
matches the ledger's view is never reported, and the ledger's own disagreement with the scheduler is reported
on its own (the repair re-mirrors the row and the pusher then writes the new values).

Each snapshot pair yields at most one finding per damage: a booking whose ledger mirror is stale is reported
as stale only (its Event is rewritten by the repair anyway); an Event that went with its link's deleted Mogli
Event is covered by the link's finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge.records.drift import (
    BookingView,
    DriftKind,
    EventSnapshot,
    Finding,
    LedgerView,
    LinkView,
    MogliSnapshot,
    Repair,
    RepairPolicy,
)
from bridge.records.ledger import ActivityRecord, LinkRecord
from bridge.records.outbound import ActivityWork, LinkWork, MogliEventFields
from bridge.records.source import BookingRow, BookingState, LinkRow, LinkState, UserRow, UserState
from bridge.rules.mapping import (
    DeleteEvent,
    MappingOptions,
    NothingToDo,
    UpsertEvent,
    event_action,
    mogli_event_for,
)
from bridge.rules.precision import same_instant
from bridge.rules.text import normalise_id

__all__ = [
    "BookingView",
    "DriftKind",
    "EventSnapshot",
    "Finding",
    "LedgerView",
    "LinkView",
    "MogliSnapshot",
    "Repair",
    "RepairPolicy",
    "activity_work",
    "classify_booking",
    "classify_link",
    "classify_user",
    "link_state",
]

# Ledger states in which a row is still on its way (or refused): not drift, the pusher owns it.
_IN_FLIGHT = frozenset({"pending", "failed", "unbooked"})
_LINK_MIRROR = ("link_type", "owner_user_id", "title", "description", "duration_minutes", "is_active")
_LINK_SOURCE = ("link_type", "owner_id", "title", "description", "duration_minutes", "is_active")
_BOOKING_MIRROR = ("link_id", "assigned_user_id", "start_at", "end_at", "status", "related_record_id")


def _id(value: str | None) -> str | None:
    return normalise_id(value) if value else None


def _text(value: str | None) -> str | None:
    return value or None


# ------------------------------------------------------------------------------------------ users


def classify_user(user_id: str, source: UserRow | None, ledger: Mapping[str, str | None]) -> list[Finding]:
    """A scheduler user the ledger does not know, or whose Salesforce connection it has wrong."""
    if source is None:
        return []
    detail: dict[str, Any] = {"user_id": user_id}
    if user_id not in ledger:
        detail["reason"] = "user unknown to the ledger"
    elif ledger[user_id] != source.salesforce_user_id:
        detail.update(field="salesforce_user_id", expected=source.salesforce_user_id, found=ledger[user_id])
    else:
        return []
    return [Finding(DriftKind.LEDGER_USER_STALE, Repair.INGEST, detail=detail)]


# ------------------------------------------------------------------------------------------ links


def link_state(record: LinkRecord) -> LinkState:
    """The rules' view of a ledger link."""
    return LinkState(
        link_id=record.link_id,
        link_type=record.link_type,
        owner_user_id=record.owner_user_id,
        title=record.title,
        description=record.description,
        duration_minutes=record.duration_minutes,
        is_active=record.is_active,
        source_deleted=record.source_deleted,
        mogli_event_id=record.mogli_event_id,
        state=record.state,
    )


def _link_mirror_diff(source: LinkRow | None, ledger: LinkRecord) -> dict[str, Any]:
    if source is None:
        return {} if ledger.source_deleted else {"deleted_in_scheduler": True}
    diff: dict[str, Any] = {}
    if ledger.source_deleted:
        diff["source_deleted"] = {"expected": False, "found": True}
    for mirror, column in zip(_LINK_MIRROR, _LINK_SOURCE, strict=True):
        want, got = getattr(source, column), getattr(ledger, mirror)
        if want != got:
            diff[mirror] = {"expected": want, "found": got}
    return diff


def classify_link(
    view: LinkView, users: Mapping[str, str | None], policy: RepairPolicy = RepairPolicy()
) -> list[Finding]:
    """Every disagreement about one link and its Mogli Events."""
    link_id, ledger = view.link_id, view.ledger
    live = sorted((m for m in view.mogli_events if not m.deleted), key=lambda m: (m.created_at, m.id))
    if view.source is None and ledger is None:
        return [
            Finding(DriftKind.ORPHAN_MOGLI_EVENT, Repair.DELETE, link_id=link_id, salesforce_id=m.id)
            for m in live
        ]
    if ledger is None:
        return [Finding(DriftKind.LEDGER_MISSING_LINK, Repair.INGEST, link_id=link_id)]
    diff = _link_mirror_diff(view.source, ledger)
    if diff:
        return [Finding(DriftKind.LEDGER_LINK_STALE, Repair.INGEST, link_id=link_id, detail={"fields": diff})]
    if ledger.state == "deleted_in_salesforce" and not ledger.source_deleted:
        return _deleted_mogli_findings(view, policy)
    if ledger.state != "synced":
        return []
    return _mogli_findings(view, ledger, live, users, policy)


def _deleted_mogli_findings(view: LinkView, policy: RepairPolicy) -> list[Finding]:
    """A Mogli Event the inbound path saw deleted: recreated (with the link's future Events) by policy."""
    if policy.on_mogli_event_deleted == "keep_deleted":
        return []
    deleted = sorted((m for m in view.mogli_events if m.deleted), key=lambda m: (m.created_at, m.id))
    gone = deleted[-1].id if deleted else None
    detail = {"policy": policy.on_mogli_event_deleted, "state": "deleted_in_salesforce"}
    return [Finding(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.RELINK, view.link_id, None, gone, detail)]


def _mogli_findings(
    view: LinkView,
    ledger: LinkRecord,
    live: list[MogliSnapshot],
    users: Mapping[str, str | None],
    policy: RepairPolicy,
) -> list[Finding]:
    link_id, known = view.link_id, _id(ledger.mogli_event_id)
    if not live:
        if known in {_id(m.id) for m in view.mogli_events if m.deleted}:
            kept = policy.on_mogli_event_deleted == "keep_deleted"
            repair = Repair.MARK_DELETED if kept else Repair.RELINK
            policy_detail = {"policy": policy.on_mogli_event_deleted}
            return [Finding(DriftKind.LEDGER_POINTS_AT_DELETED, repair, link_id, None, known, policy_detail)]
        return [Finding(DriftKind.MOGLI_EVENT_MISSING, Repair.RELINK, link_id=link_id, salesforce_id=known)]
    keep = next((m for m in live if _id(m.id) == known), live[0])
    findings = [
        Finding(
            DriftKind.DUPLICATE_MOGLI_EVENT,
            Repair.DELETE,
            link_id=link_id,
            salesforce_id=m.id,
            detail={"kept": keep.id},
        )
        for m in live
        if m is not keep
    ]
    if _id(keep.id) != known:
        detail = {"ledger": known, "live": keep.id}
        return [
            *findings,
            Finding(DriftKind.LEDGER_ID_MISMATCH, Repair.RELINK, link_id=link_id, detail=detail),
        ]
    owner_id = ledger.owner_user_id
    owner = UserState(owner_id, users.get(owner_id)) if owner_id and owner_id in users else None
    expected = mogli_event_for(LinkWork(link_state(ledger), owner, ledger.version, 0))
    if isinstance(expected, MogliEventFields):
        findings += _mogli_field_findings(link_id, keep, expected)
    return findings


def _mogli_field_findings(link_id: str, found: MogliSnapshot, want: MogliEventFields) -> list[Finding]:
    pairs = {
        "Name": (want.name, found.name),
        "OwnerId": (_id(want.owner_id), _id(found.owner_id)),
        "Link_Type": (want.link_type, found.link_type),
        "Description": (_text(want.description), _text(found.description)),
    }
    return [
        Finding(
            DriftKind.MOGLI_FIELD_MISMATCH,
            Repair.REQUEUE,
            link_id=link_id,
            salesforce_id=found.id,
            detail={"field": name, "expected": expected, "found": got},
        )
        for name, (expected, got) in pairs.items()
        if expected != got
    ]


# ------------------------------------------------------------------------------------------ bookings


def _booking_mirror_diff(source: BookingRow | None, ledger: ActivityRecord) -> dict[str, Any]:
    if source is None:
        return {} if ledger.source_deleted else {"deleted_in_scheduler": True}
    diff: dict[str, Any] = {}
    if ledger.source_deleted:
        diff["source_deleted"] = {"expected": False, "found": True}
    for column in _BOOKING_MIRROR:
        want, got = getattr(source, column), getattr(ledger, column)
        if want != got:
            diff[column] = {"expected": _plain(want), "found": _plain(got)}
    return diff


def _plain(value: Any) -> Any:
    """A JSON-friendly value for the detail."""
    return value.isoformat() if isinstance(value, datetime) else value


def activity_work(record: ActivityRecord, view: LedgerView) -> ActivityWork:
    """The rules' input for a booking, from the ledger's view."""
    link = view.links.get(record.link_id) if record.link_id else None

    def user(user_id: str | None) -> UserState | None:
        return UserState(user_id, view.users[user_id]) if user_id and user_id in view.users else None

    booking = BookingState(
        booking_id=record.booking_id,
        link_id=record.link_id,
        assigned_user_id=record.assigned_user_id,
        start_at=record.start_at,
        end_at=record.end_at,
        status=record.status,
        related_record_id=record.related_record_id,
        source_deleted=record.source_deleted,
        problems=record.problems,
    )
    return ActivityWork(
        booking=booking,
        link=link_state(link) if link is not None else None,
        owner=user(link.owner_user_id if link is not None else None),
        assignee=user(record.assigned_user_id),
        activity_id=record.activity_id,
        state=record.state,
        version=record.version,
        attempts=record.attempts,
    )


def classify_booking(
    booking: BookingView, view: LedgerView, options: MappingOptions, policy: RepairPolicy = RepairPolicy()
) -> list[Finding]:
    """Every disagreement about one booking and its Event."""
    bid, ledger = booking.booking_id, booking.ledger
    live = sorted((e for e in booking.events if not e.deleted), key=lambda e: (e.created_at, e.id))
    if booking.source is None and ledger is None:
        return [
            Finding(DriftKind.ORPHAN_EVENT, Repair.DELETE, booking_id=bid, salesforce_id=e.id) for e in live
        ]
    if ledger is None:
        return [Finding(DriftKind.LEDGER_MISSING_BOOKING, Repair.INGEST, booking_id=bid)]
    diff = _booking_mirror_diff(booking.source, ledger)
    if diff:
        detail = {"fields": diff}
        return [Finding(DriftKind.LEDGER_BOOKING_STALE, Repair.INGEST, ledger.link_id, bid, detail=detail)]
    if ledger.state in _IN_FLIGHT or (ledger.link_id in view.relinked):
        return []
    action = event_action(activity_work(ledger, view), options)
    if isinstance(action, DeleteEvent | NothingToDo):
        return [
            Finding(DriftKind.CANCELLED_EVENT_EXISTS, Repair.DELETE, ledger.link_id, bid, e.id) for e in live
        ]
    if not isinstance(action, UpsertEvent) or ledger.state in ("deleted_in_salesforce", "skipped"):
        return []  # refused by the rules, deleted by a person (policy), or left out by the backfill
    return _event_findings(booking, ledger, live, action, policy)


def _event_findings(
    booking: BookingView,
    ledger: ActivityRecord,
    live: list[EventSnapshot],
    action: UpsertEvent,
    policy: RepairPolicy,
) -> list[Finding]:
    bid, link_id, known = booking.booking_id, ledger.link_id, _id(ledger.activity_id)
    if not live:
        if known in {_id(e.id) for e in booking.events if e.deleted}:
            kept = policy.on_activity_deleted == "keep_deleted"
            repair = Repair.MARK_DELETED if kept else Repair.REQUEUE
            policy_detail = {"policy": policy.on_activity_deleted}
            return [Finding(DriftKind.LEDGER_POINTS_AT_DELETED, repair, link_id, bid, known, policy_detail)]
        return [Finding(DriftKind.MISSING_IN_SALESFORCE, Repair.REQUEUE, link_id, bid, known)]
    keep = next((e for e in live if _id(e.id) == known), live[0])
    findings = [
        Finding(DriftKind.DUPLICATE_EVENT, Repair.DELETE, link_id, bid, e.id, {"kept": keep.id})
        for e in live
        if e is not keep
    ]
    if _id(keep.id) != known:
        detail = {"ledger": known, "live": keep.id}
        return [
            *findings,
            Finding(DriftKind.LEDGER_ID_MISMATCH, Repair.REQUEUE, link_id, bid, keep.id, detail),
        ]
    return findings + _event_field_findings(link_id, bid, keep, action, ledger.owner_salesforce_id)


def _event_field_findings(
    link_id: str | None, bid: str, found: EventSnapshot, action: UpsertEvent, accepted_owner: str | None
) -> list[Finding]:
    want = action.fields
    findings = _owner_findings(link_id, bid, found, want.owner_id, accepted_owner)
    pairs: dict[str, tuple[Any, Any]] = {
        "WhoId": (_id(want.who_id), _id(found.who_id)),
        "WhatId": (_id(want.what_id), _id(found.what_id)),
        "Mogli_Event_Id__c": (_id(want.mogli_event_id), _id(found.mogli_event_id)),
        "Subject": (want.subject, found.subject),
        "Description": (_text(want.description), _text(found.description)),
    }
    findings += [
        Finding(
            DriftKind.FIELD_MISMATCH,
            Repair.REQUEUE,
            link_id,
            bid,
            found.id,
            {"field": name, "expected": _plain(expected), "found": _plain(got)},
        )
        for name, (expected, got) in pairs.items()
        if expected != got
    ]
    return findings + _time_findings(link_id, bid, found, want.start_at, want.end_at)


def _owner_findings(
    link_id: str | None, bid: str, found: EventSnapshot, expected: str, accepted: str | None
) -> list[Finding]:
    """A reassignment the ledger already recorded was accepted (policy): drift only when it is new."""
    got = _id(found.owner_id)
    if got == _id(expected) or (got is not None and got == _id(accepted)):
        return []
    detail = {"field": "OwnerId", "expected": _id(expected), "found": got, "policy": "accept"}
    return [Finding(DriftKind.FIELD_MISMATCH, Repair.ACCEPT_OWNER, link_id, bid, found.id, detail)]


def _time_findings(
    link_id: str | None, bid: str, found: EventSnapshot, start: datetime, end: datetime
) -> list[Finding]:
    """One finding for a moved Event: Salesforce shifts the end with the start, so a drag is one drift."""
    detail: dict[str, Any] = {}
    if not _same_time(start, found.start_at):
        detail.update(field="StartDateTime", expected=_plain(start), found=_plain(found.start_at))
    if not _same_time(end, found.end_at):
        key = "end_" if detail else ""
        detail.setdefault("field", "EndDateTime")
        detail.update({f"{key}expected": _plain(end), f"{key}found": _plain(found.end_at)})
    if not detail:
        return []
    return [Finding(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, link_id, bid, found.id, detail)]


def _same_time(expected: datetime, found: datetime | None) -> bool:
    """Equal at Salesforce's precision (see `precision.py`); a missing time is never the same."""
    return found is not None and same_instant(expected, found)
