"""Drift classification: three snapshots of one booking or link -> findings with kind, repair and detail."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import sfid
from bridge.records.ledger import ActivityRecord, LinkRecord
from bridge.records.source import BookingRow, LinkRow, UserRow
from bridge.rules.drift import (
    BookingView,
    DriftKind,
    EventSnapshot,
    LedgerView,
    LinkView,
    MogliSnapshot,
    Repair,
    RepairPolicy,
    classify_booking,
    classify_link,
    classify_user,
)
from bridge.rules.mapping import MappingOptions

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
START = datetime(2030, 6, 1, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)
SUB_START, SUB_END = START.replace(microsecond=594570), END.replace(microsecond=594570)
BOOKING, LINK, OWNER = (
    "b0000000-0000-4000-8000-000000000001",
    "10000000-0000-4000-8000-00000000000a",
    "u-owner",
)
SF_OWNER = sfid.to18("005000000000001")
SF_OTHER = sfid.to18("005000000000002")
CONTACT = sfid.to18("003000000000001")
LEAD = sfid.to18("00Q000000000001")
MOGLI = sfid.to18("a0X000000000001")
MOGLI_2 = sfid.to18("a0X000000000002")
EVENT = sfid.to18("00U000000000001")
EVENT_2 = sfid.to18("00U000000000002")
DELETE = MappingOptions(on_cancel="delete")

SOURCE_LINK = LinkRow(LINK, "one_on_one", OWNER, "Intro call", "Let's talk", 30, True)
LEDGER_LINK = LinkRecord(
    link_id=LINK,
    link_type="one_on_one",
    owner_user_id=OWNER,
    owner_salesforce_id=SF_OWNER,
    title="Intro call",
    description="Let's talk",
    duration_minutes=30,
    is_active=True,
    source_deleted=False,
    problems=(),
    mogli_event_id=MOGLI,
    state="synced",
    version=1,
    synced_version=1,
    attempts=0,
    last_error=None,
    error_code=None,
    next_attempt_at=None,
    first_booked_at=NOW,
    synced_at=NOW,
    updated_at=NOW,
)
MOGLI_RECORD = MogliSnapshot(
    MOGLI, LINK, False, "2030-01-01T00:00:00.000+0000", "Intro call", SF_OWNER, "one_on_one", "Let's talk"
)
SOURCE_BOOKING = BookingRow(BOOKING, LINK, None, START, END, "scheduled", CONTACT)
LEDGER_BOOKING = ActivityRecord(
    booking_id=BOOKING,
    link_id=LINK,
    activity_id=EVENT,
    owner_salesforce_id=SF_OWNER,
    who_id=CONTACT,
    what_id=MOGLI,
    start_at=START,
    end_at=END,
    assigned_user_id=None,
    status="scheduled",
    related_record_id=CONTACT,
    problems=(),
    source_deleted=False,
    state="synced",
    version=1,
    synced_version=1,
    attempts=0,
    last_error=None,
    error_code=None,
    next_attempt_at=None,
    source_lsn=1,
    synced_at=NOW,
    updated_at=NOW,
)
EVENT_RECORD = EventSnapshot(
    EVENT,
    BOOKING,
    False,
    "2030-01-01T00:00:00.000+0000",
    SF_OWNER,
    CONTACT,
    MOGLI,
    MOGLI,
    "Intro call",
    "Let's talk",
    START,
    END,
)
VIEW = LedgerView(links={LINK: LEDGER_LINK}, users={OWNER: SF_OWNER})


def _booking(**changes: Any) -> BookingView:
    base = BookingView(BOOKING, SOURCE_BOOKING, LEDGER_BOOKING, (EVENT_RECORD,))
    return dataclasses.replace(base, **changes)


def _event(**changes: Any) -> EventSnapshot:
    return dataclasses.replace(EVENT_RECORD, **changes)


def _ledger(**changes: Any) -> ActivityRecord:
    return dataclasses.replace(LEDGER_BOOKING, **changes)


Expected = list[tuple[DriftKind, Repair, str | None]]  # kind, repair, field (or salesforce id for deletes)

BOOKING_CASES: list[tuple[str, BookingView, Expected]] = [
    ("in agreement", _booking(), []),
    (
        "Event deleted by a person",
        _booking(events=(_event(deleted=True),)),
        [(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.MARK_DELETED, None)],
    ),
    ("no Event at all", _booking(events=()), [(DriftKind.MISSING_IN_SALESFORCE, Repair.REQUEUE, None)]),
    (
        "owner changed",
        _booking(events=(_event(owner_id=SF_OTHER),)),
        [(DriftKind.FIELD_MISMATCH, Repair.ACCEPT_OWNER, "OwnerId")],
    ),
    (
        "owner change the ledger already accepted",
        _booking(ledger=_ledger(owner_salesforce_id=SF_OTHER), events=(_event(owner_id=SF_OTHER),)),
        [],
    ),
    (
        "who changed",
        _booking(events=(_event(who_id=LEAD),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "WhoId")],
    ),
    (
        "what changed",
        _booking(events=(_event(what_id=MOGLI_2),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "WhatId")],
    ),
    (
        "mogli field changed",
        _booking(events=(_event(mogli_event_id=MOGLI_2),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "Mogli_Event_Id__c")],
    ),
    (
        "subject changed",
        _booking(events=(_event(subject="x"),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "Subject")],
    ),
    (
        "description changed",
        _booking(events=(_event(description=None),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "Description")],
    ),
    (
        "moved: start and end are one drift",
        _booking(events=(_event(start_at=START + timedelta(hours=1), end_at=END + timedelta(hours=1)),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "StartDateTime")],
    ),
    (
        "end changed alone",
        _booking(events=(_event(end_at=END + timedelta(minutes=5)),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "EndDateTime")],
    ),
    (
        "microseconds below Salesforce's precision",
        _booking(
            source=dataclasses.replace(SOURCE_BOOKING, start_at=START.replace(microsecond=400)),
            ledger=_ledger(start_at=START.replace(microsecond=400)),
        ),
        [],
    ),
    (
        "sub-second digits the bridge sends, Salesforce keeps whole seconds",
        _booking(
            source=dataclasses.replace(SOURCE_BOOKING, start_at=SUB_START, end_at=SUB_END),
            ledger=_ledger(start_at=SUB_START, end_at=SUB_END),
        ),
        [],
    ),
    (
        "a whole second off is a move",
        _booking(events=(_event(start_at=START + timedelta(seconds=1), end_at=END + timedelta(seconds=1)),)),
        [(DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "StartDateTime")],
    ),
    (
        "two fields changed: two findings",
        _booking(events=(_event(subject="x", owner_id=SF_OTHER),)),
        [
            (DriftKind.FIELD_MISMATCH, Repair.ACCEPT_OWNER, "OwnerId"),
            (DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "Subject"),
        ],
    ),
    ("15-character ids are the same record", _booking(events=(_event(owner_id=SF_OWNER[:15]),)), []),
    (
        "live record other than the ledger's",
        _booking(events=(_event(id=EVENT_2),)),
        [(DriftKind.LEDGER_ID_MISMATCH, Repair.REQUEUE, None)],
    ),
    (
        "duplicate Event: the ledger's is kept",
        _booking(events=(_event(id=EVENT_2, created_at="2029-01-01T00:00:00.000+0000"), EVENT_RECORD)),
        [(DriftKind.DUPLICATE_EVENT, Repair.DELETE, EVENT_2)],
    ),
    ("orphan Event", _booking(source=None, ledger=None), [(DriftKind.ORPHAN_EVENT, Repair.DELETE, EVENT)]),
    ("deleted orphan is not drift", _booking(source=None, ledger=None, events=(_event(deleted=True),)), []),
    (
        "ledger missing the booking",
        _booking(ledger=None),
        [(DriftKind.LEDGER_MISSING_BOOKING, Repair.INGEST, None)],
    ),
    (
        "booking deleted in the scheduler",
        _booking(source=None),
        [(DriftKind.LEDGER_BOOKING_STALE, Repair.INGEST, None)],
    ),
    (
        "scheduler moved the booking (the Event is not also reported)",
        _booking(source=dataclasses.replace(SOURCE_BOOKING, start_at=START + timedelta(hours=1))),
        [(DriftKind.LEDGER_BOOKING_STALE, Repair.INGEST, None)],
    ),
    (
        "cancelled booking whose Event is live",
        _booking(
            source=dataclasses.replace(SOURCE_BOOKING, status="cancelled"),
            ledger=_ledger(status="cancelled", state="cancelled"),
        ),
        [(DriftKind.CANCELLED_EVENT_EXISTS, Repair.DELETE, EVENT)],
    ),
    (
        "cancelled booking, Event gone",
        _booking(
            source=dataclasses.replace(SOURCE_BOOKING, status="cancelled"),
            ledger=_ledger(status="cancelled", state="cancelled"),
            events=(_event(deleted=True),),
        ),
        [],
    ),
    ("pending row: the pusher owns it", _booking(ledger=_ledger(state="pending"), events=()), []),
    ("failed row: not drift", _booking(ledger=_ledger(state="failed"), events=()), []),
    (
        "deleted by a person, policy keeps it deleted",
        _booking(ledger=_ledger(state="deleted_in_salesforce"), events=(_event(deleted=True),)),
        [],
    ),
    ("skipped by the backfill, scheduled", _booking(ledger=_ledger(state="skipped"), events=()), []),
]


def _shape(findings: list[Any]) -> Expected:
    out: Expected = []
    for f in findings:
        third = f.salesforce_id if f.repair is Repair.DELETE else f.detail.get("field")
        out.append((f.kind, f.repair, third))
    return out


@pytest.mark.parametrize(("name", "booking", "expected"), BOOKING_CASES, ids=[c[0] for c in BOOKING_CASES])
def test_booking_drift(name: str, booking: BookingView, expected: Expected) -> None:
    """Each booking-side difference yields exactly the listed findings (kind, repair, field or record)."""
    assert _shape(classify_booking(booking, VIEW, DELETE)) == expected


def test_booking_on_a_relinked_link_is_left_to_the_link() -> None:
    """An Event that went with its link's deleted Mogli Event is covered by the link's finding."""
    view = dataclasses.replace(VIEW, relinked=frozenset({LINK}))
    assert classify_booking(_booking(events=(_event(deleted=True),)), view, DELETE) == []


def test_lead_booking_expects_no_what_id() -> None:
    """For a Lead booking the rules write no WhatId; an Event with one is a WhatId mismatch."""
    source = dataclasses.replace(SOURCE_BOOKING, related_record_id=LEAD)
    ledger = _ledger(related_record_id=LEAD)
    ok = _booking(source=source, ledger=ledger, events=(_event(who_id=LEAD, what_id=None),))
    assert classify_booking(ok, VIEW, DELETE) == []
    bad = dataclasses.replace(ok, events=(_event(who_id=LEAD, what_id=MOGLI),))
    assert _shape(classify_booking(bad, VIEW, DELETE)) == [
        (DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "WhatId")
    ]


def test_kept_cancelled_event_expects_the_prefixed_subject() -> None:
    """With sync.on_cancel=keep the Event of a cancelled booking stays and must carry the prefix."""
    source = dataclasses.replace(SOURCE_BOOKING, status="cancelled")
    ledger = _ledger(status="cancelled")
    keep = MappingOptions(on_cancel="keep")
    stale = _booking(source=source, ledger=ledger)
    assert _shape(classify_booking(stale, VIEW, keep)) == [
        (DriftKind.FIELD_MISMATCH, Repair.REQUEUE, "Subject")
    ]
    good = _booking(source=source, ledger=ledger, events=(_event(subject="Cancelled: Intro call"),))
    assert classify_booking(good, VIEW, keep) == []


def test_field_detail_names_expected_and_found_values() -> None:
    """The detail of a field mismatch carries the expected and the found value (ids and text, no names)."""
    [finding] = classify_booking(_booking(events=(_event(subject="x"),)), VIEW, DELETE)
    assert finding.detail == {"field": "Subject", "expected": "Intro call", "found": "x"}
    assert finding.booking_id == BOOKING and finding.link_id == LINK and finding.salesforce_id == EVENT


# ------------------------------------------------------------------------------------------ links


def _mogli(**changes: Any) -> MogliSnapshot:
    return dataclasses.replace(MOGLI_RECORD, **changes)


def _link(**changes: Any) -> LinkView:
    return dataclasses.replace(LinkView(LINK, SOURCE_LINK, LEDGER_LINK, (MOGLI_RECORD,)), **changes)


LINK_CASES: list[tuple[str, LinkView, Expected]] = [
    ("in agreement", _link(), []),
    (
        "Mogli Event deleted",
        _link(mogli_events=(_mogli(deleted=True),)),
        [(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.RELINK, None)],
    ),
    ("Mogli Event missing", _link(mogli_events=()), [(DriftKind.MOGLI_EVENT_MISSING, Repair.RELINK, None)]),
    (
        "name changed",
        _link(mogli_events=(_mogli(name="x"),)),
        [(DriftKind.MOGLI_FIELD_MISMATCH, Repair.REQUEUE, "Name")],
    ),
    (
        "owner changed",
        _link(mogli_events=(_mogli(owner_id=SF_OTHER),)),
        [(DriftKind.MOGLI_FIELD_MISMATCH, Repair.REQUEUE, "OwnerId")],
    ),
    (
        "type changed",
        _link(mogli_events=(_mogli(link_type="rsvp"),)),
        [(DriftKind.MOGLI_FIELD_MISMATCH, Repair.REQUEUE, "Link_Type")],
    ),
    (
        "description changed",
        _link(mogli_events=(_mogli(description=""),)),
        [(DriftKind.MOGLI_FIELD_MISMATCH, Repair.REQUEUE, "Description")],
    ),
    (
        "duplicate: the ledger's is kept even when younger",
        _link(mogli_events=(_mogli(id=MOGLI_2, created_at="2000-01-01T00:00:00.000+0000"), MOGLI_RECORD)),
        [(DriftKind.DUPLICATE_MOGLI_EVENT, Repair.DELETE, MOGLI_2)],
    ),
    (
        "live record other than the ledger's",
        _link(mogli_events=(_mogli(id=MOGLI_2),)),
        [(DriftKind.LEDGER_ID_MISMATCH, Repair.RELINK, None)],
    ),
    (
        "orphan Mogli Event",
        _link(source=None, ledger=None),
        [(DriftKind.ORPHAN_MOGLI_EVENT, Repair.DELETE, MOGLI)],
    ),
    ("ledger missing the link", _link(ledger=None), [(DriftKind.LEDGER_MISSING_LINK, Repair.INGEST, None)]),
    (
        "title changed in the scheduler",
        _link(source=dataclasses.replace(SOURCE_LINK, title="New")),
        [(DriftKind.LEDGER_LINK_STALE, Repair.INGEST, None)],
    ),
    (
        "link deleted in the scheduler",
        _link(source=None),
        [(DriftKind.LEDGER_LINK_STALE, Repair.INGEST, None)],
    ),
    (
        "deleted link the ledger knows as deleted",
        _link(source=None, ledger=dataclasses.replace(LEDGER_LINK, source_deleted=True)),
        [],
    ),
    (
        "unbooked link: nothing written yet",
        _link(
            ledger=dataclasses.replace(LEDGER_LINK, state="unbooked", mogli_event_id=None), mogli_events=()
        ),
        [],
    ),
]


@pytest.mark.parametrize(("name", "link", "expected"), LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_link_drift(name: str, link: LinkView, expected: Expected) -> None:
    """Each link-side difference yields exactly the listed findings."""
    assert _shape(classify_link(link, {OWNER: SF_OWNER})) == expected


def test_duplicate_without_the_ledgers_record_keeps_the_oldest() -> None:
    """When the ledger points at none of the live duplicates, the oldest stays and the ledger is relinked."""
    older = _mogli(id=MOGLI_2, created_at="2000-01-01T00:00:00.000+0000")
    newer = _mogli(id=sfid.to18("a0X000000000003"))
    findings = classify_link(_link(mogli_events=(newer, older)), {OWNER: SF_OWNER})
    assert _shape(findings) == [
        (DriftKind.DUPLICATE_MOGLI_EVENT, Repair.DELETE, newer.id),
        (DriftKind.LEDGER_ID_MISMATCH, Repair.RELINK, None),
    ]


# ------------------------------------------------------------------------------------------ users

USER_CASES: list[tuple[str, Callable[[], list[Any]], Expected]] = [
    ("in agreement", lambda: classify_user(OWNER, UserRow(OWNER, SF_OWNER), {OWNER: SF_OWNER}), []),
    (
        "connection changed",
        lambda: classify_user(OWNER, UserRow(OWNER, SF_OTHER), {OWNER: SF_OWNER}),
        [(DriftKind.LEDGER_USER_STALE, Repair.INGEST, "salesforce_user_id")],
    ),
    (
        "unknown to the ledger",
        lambda: classify_user(OWNER, UserRow(OWNER, SF_OWNER), {}),
        [(DriftKind.LEDGER_USER_STALE, Repair.INGEST, None)],
    ),
    ("gone from the scheduler", lambda: classify_user(OWNER, None, {OWNER: SF_OWNER}), []),
]


@pytest.mark.parametrize(("name", "classify", "expected"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_drift(name: str, classify: Callable[[], list[Any]], expected: Expected) -> None:
    """A user whose ledger mirror is missing or stale is one finding, repaired by re-mirroring."""
    assert _shape(classify()) == expected


def test_policy_recreate_requeues_a_deleted_event() -> None:
    """With sync.on_activity_deleted=recreate the Event a person deleted is written again."""
    policy = RepairPolicy(on_activity_deleted="recreate")
    findings = classify_booking(_booking(events=(_event(deleted=True),)), VIEW, DELETE, policy)
    assert _shape(findings) == [(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.REQUEUE, None)]


def test_policy_keep_deleted_leaves_a_deleted_mogli_event_deleted() -> None:
    """With sync.on_mogli_event_deleted=keep_deleted the ledger records the delete instead of a relink."""
    policy = RepairPolicy(on_mogli_event_deleted="keep_deleted")
    findings = classify_link(_link(mogli_events=(_mogli(deleted=True),)), {OWNER: SF_OWNER}, policy)
    assert _shape(findings) == [(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.MARK_DELETED, None)]
    assert findings[0].salesforce_id == MOGLI


GONE_LINK = dataclasses.replace(
    LEDGER_LINK, state="deleted_in_salesforce", mogli_event_id=None, error_code="MOGLI_EVENT_DELETED"
)


def test_a_mogli_event_deleted_in_salesforce_is_recreated_by_default() -> None:
    """A link the inbound path left `deleted_in_salesforce` is relinked under the default policy, recreate."""
    findings = classify_link(_link(ledger=GONE_LINK, mogli_events=(_mogli(deleted=True),)), {OWNER: SF_OWNER})
    assert _shape(findings) == [(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.RELINK, None)]
    assert findings[0].salesforce_id == MOGLI and findings[0].detail["policy"] == "recreate"
    purged = classify_link(_link(ledger=GONE_LINK, mogli_events=()), {OWNER: SF_OWNER})
    assert _shape(purged) == [(DriftKind.LEDGER_POINTS_AT_DELETED, Repair.RELINK, None)]


def test_a_mogli_event_deleted_in_salesforce_stays_deleted_under_keep_deleted() -> None:
    """With sync.on_mogli_event_deleted=keep_deleted a link the inbound path marked deleted is not drift."""
    policy = RepairPolicy(on_mogli_event_deleted="keep_deleted")
    link = _link(ledger=GONE_LINK, mogli_events=(_mogli(deleted=True),))
    assert classify_link(link, {OWNER: SF_OWNER}, policy) == []
