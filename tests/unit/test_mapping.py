"""The rules of CONTRACT section 5: ledger state of links, bookings and users -> desired Salesforce state."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, cast

import pytest

from bridge.records.outbound import ActivityWork, EventFields, LinkWork, MogliEventFields
from bridge.records.source import BookingState, LinkState, UserState
from bridge.rules.mapping import (
    WAITING_CODES,
    DeleteEvent,
    EventAction,
    FailureCode,
    MappingOptions,
    NothingToDo,
    RuleFailure,
    UpsertEvent,
    event_action,
    mogli_event_for,
)
from bridge.rules.text import (
    DESCRIPTION_LIMIT,
    cut,
    cut_description,
    description_marker,
    normalise_id,
    salesforce_length,
)

# ---------------------------------------------------------------------------------------------- fixtures
# Ids below are worked by hand: 15 characters + the case checksum (see test_sfid.py).

OWNER_ID = "7f1e0c1a-0000-4000-8000-000000000001"
ASSIGNEE_ID = "7f1e0c1a-0000-4000-8000-000000000002"
LINK_ID = "9a1b2c3d-0000-4000-8000-00000000000a"
OTHER_LINK_ID = "9a1b2c3d-0000-4000-8000-00000000000b"
BOOKING_ID = "b0000000-0000-4000-8000-000000000001"

OWNER_SF15, OWNER_SF = "005Dn000001OwNr", "005Dn000001OwNrIAK"
ASSIGNEE_SF15, ASSIGNEE_SF = "005Dn000002AsSg", "005Dn000002AsSgIAK"
CONTACT15, CONTACT = "003Dn00000CoNtA", "003Dn00000CoNtAIAV"
LEAD15, LEAD = "00QDn00000LeAdX", "00QDn00000LeAdXMAV"
ACCOUNT = "001Dn00000AcCtZIAV"
OPPORTUNITY = "006Dn00000OpPtYIAV"
CUSTOM = "a0X5g00000ABCdeEAH"
MOGLI15, MOGLI = "a01Dn00000MoGlI", "a01Dn00000MoGlIIAV"
EVENT_ID = "00UDn00000EvEnTMAV"

TITLE = "Intro call about the renewal"
DESCRIPTION = "Agenda: pricing, onboarding, questions."
PERSONAL = "jane.doe@example.org"  # a value that must never reach a failure message

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=30)
MINUTE = timedelta(minutes=1)

OWNER = UserState(OWNER_ID, OWNER_SF)
ASSIGNEE = UserState(ASSIGNEE_ID, ASSIGNEE_SF)

BASE_LINK = LinkState(
    link_id=LINK_ID,
    link_type="one_on_one",
    owner_user_id=OWNER_ID,
    title=TITLE,
    description=DESCRIPTION,
    duration_minutes=30,
    is_active=True,
    source_deleted=False,
    mogli_event_id=MOGLI,
    state="synced",
)
BASE_BOOKING = BookingState(
    booking_id=BOOKING_ID,
    link_id=LINK_ID,
    assigned_user_id=None,
    start_at=T0,
    end_at=T1,
    status="scheduled",
    related_record_id=CONTACT,
    source_deleted=False,
)
BASE_FIELDS = EventFields(
    booking_id=BOOKING_ID,
    owner_id=OWNER_SF,
    who_id=CONTACT,
    what_id=MOGLI,
    mogli_event_id=MOGLI,
    subject=TITLE,
    description=DESCRIPTION,
    start_at=T0,
    end_at=T1,
)
DELETE = MappingOptions(on_cancel="delete")
KEEP = MappingOptions(on_cancel="keep")
MULTIDAY = MappingOptions(multiday_events=True)
RR = {"link_type": "round_robin"}
RR_BOOKING = {"assigned_user_id": ASSIGNEE_ID}
_UNSET: Any = object()


def work(
    booking: dict[str, Any] | None = None,
    link: dict[str, Any] | LinkState | None = _UNSET,
    *,
    owner: UserState | None = OWNER,
    assignee: UserState | None = ASSIGNEE,
    activity_id: str | None = None,
    state: str = "pending",
) -> ActivityWork:
    """An ActivityWork: the base booking and link with the given changes (link=None: the ledger has none)."""
    if link is _UNSET:
        link_state: LinkState | None = BASE_LINK
    elif isinstance(link, dict):
        link_state = dataclasses.replace(BASE_LINK, **link)
    else:
        link_state = link
    return ActivityWork(
        booking=dataclasses.replace(BASE_BOOKING, **(booking or {})),
        link=link_state,
        owner=owner,
        assignee=assignee,
        activity_id=activity_id,
        state=state,
        version=1,
        attempts=0,
    )


def link_work(owner: UserState | None = OWNER, **changes: Any) -> LinkWork:
    """A LinkWork for the base link with the given changes."""
    return LinkWork(link=dataclasses.replace(BASE_LINK, **changes), owner=owner, version=1, attempts=0)


def marker(n: int) -> str:
    """The description marker, spelled out here so that a change of wording is a visible test change."""
    return f"\n\n[... truncated by mogli-bridge: {n:,} characters in the scheduler]"


# ---------------------------------------------------------------------------------------------- upserts

MOVED_LINK = dataclasses.replace(
    BASE_LINK,
    link_id=OTHER_LINK_ID,
    link_type="rsvp",
    title="Webinar",
    description=None,
    mogli_event_id=CUSTOM,
)
PLUS2 = timezone(timedelta(hours=2))
D32001 = "d" * 32_001
D45120 = "e" * 45_120

UPSERTS = [
    # owner by link type
    pytest.param(
        work(),
        DELETE,
        {},
        ("owner=link owner (one_on_one)", "who=Contact", "what=Mogli Event"),
        id="one-on-one-contact",
    ),
    pytest.param(
        work(link={"link_type": "rsvp"}), DELETE, {}, ("owner=link owner (rsvp)",), id="rsvp-contact"
    ),
    pytest.param(
        work(RR_BOOKING, RR),
        DELETE,
        {"owner_id": ASSIGNEE_SF},
        ("owner=assigned user (round_robin)",),
        id="round-robin-assignee-owns",
    ),
    pytest.param(
        work(RR_BOOKING, RR, owner=None),
        DELETE,
        {"owner_id": ASSIGNEE_SF},
        (),
        id="round-robin-ignores-unconnected-link-owner",
    ),
    pytest.param(
        work({"assigned_user_id": ASSIGNEE_ID}),
        DELETE,
        {},
        ("owner=link owner (one_on_one)",),
        id="one-on-one-ignores-assignee",
    ),
    pytest.param(
        work({"assigned_user_id": ASSIGNEE_ID}, {"link_type": "rsvp"}),
        DELETE,
        {},
        (),
        id="rsvp-ignores-assignee",
    ),
    # WhoId / WhatId
    pytest.param(
        work({"related_record_id": LEAD}),
        DELETE,
        {"who_id": LEAD, "what_id": None},
        ("who=Lead", "what=empty (Lead WhoId), Mogli Event in Mogli_Event_Id__c"),
        id="one-on-one-lead",
    ),
    pytest.param(
        work({"related_record_id": LEAD, **RR_BOOKING}, RR),
        DELETE,
        {"who_id": LEAD, "what_id": None, "owner_id": ASSIGNEE_SF},
        ("who=Lead",),
        id="round-robin-lead",
    ),
    pytest.param(
        work({"related_record_id": LEAD}, {"link_type": "rsvp"}),
        DELETE,
        {"who_id": LEAD, "what_id": None},
        (),
        id="rsvp-lead",
    ),
    pytest.param(
        work({"related_record_id": ACCOUNT}),
        DELETE,
        {"who_id": None},
        ("who=empty (related record is Account 001, not a Contact or Lead)", "what=Mogli Event"),
        id="account-no-who",
    ),
    pytest.param(
        work({"related_record_id": OPPORTUNITY}),
        DELETE,
        {"who_id": None},
        ("Opportunity 006",),
        id="opportunity-no-who",
    ),
    pytest.param(
        work({"related_record_id": CUSTOM}),
        DELETE,
        {"who_id": None},
        ("another object a0X",),
        id="custom-object-no-who",
    ),
    pytest.param(
        work({"related_record_id": OWNER_SF}), DELETE, {"who_id": None}, ("User 005",), id="user-id-is-no-who"
    ),
    pytest.param(
        work({"related_record_id": None}),
        DELETE,
        {"who_id": None},
        ("who=empty (no related record)",),
        id="no-related-record",
    ),
    pytest.param(
        work({"related_record_id": "   "}),
        DELETE,
        {"who_id": None},
        ("no related record",),
        id="blank-related-record",
    ),
    pytest.param(work({"related_record_id": ""}), DELETE, {"who_id": None}, (), id="empty-related-record"),
    # 15 -> 18 normalisation
    pytest.param(work({"related_record_id": CONTACT15}), DELETE, {}, (), id="contact-15-normalised"),
    pytest.param(
        work({"related_record_id": LEAD15}),
        DELETE,
        {"who_id": LEAD, "what_id": None},
        (),
        id="lead-15-normalised",
    ),
    pytest.param(
        work({"related_record_id": LEAD.lower()}),
        DELETE,
        {"who_id": LEAD, "what_id": None},
        ("who=Lead",),
        id="lead-18-lowercase-still-a-lead",
    ),
    pytest.param(work({"related_record_id": f" {CONTACT} "}), DELETE, {}, (), id="contact-with-whitespace"),
    pytest.param(work(owner=UserState(OWNER_ID, OWNER_SF15)), DELETE, {}, (), id="owner-15-normalised"),
    pytest.param(
        work(RR_BOOKING, RR, assignee=UserState(ASSIGNEE_ID, ASSIGNEE_SF.upper())),
        DELETE,
        {"owner_id": ASSIGNEE_SF},
        (),
        id="assignee-18-uppercase-normalised",
    ),
    pytest.param(work(link={"mogli_event_id": MOGLI15}), DELETE, {}, (), id="mogli-event-15-normalised"),
    # Subject
    pytest.param(
        work({"status": "cancelled"}),
        KEEP,
        {"subject": "Cancelled: " + TITLE},
        ("subject prefixed (cancelled, sync.on_cancel=keep)",),
        id="cancelled-keep-prefix",
    ),
    pytest.param(
        work({"status": "cancelled"}),
        MappingOptions(on_cancel="keep", cancelled_prefix="[X] "),
        {"subject": "[X] " + TITLE},
        (),
        id="cancelled-keep-custom-prefix",
    ),
    pytest.param(
        work({"status": "cancelled"}, {"title": "t" * 255}),
        KEEP,
        {"subject": "Cancelled: " + "t" * 243 + "…"},
        (),
        id="cancelled-keep-long-title-within-255",
    ),
    pytest.param(
        work({"status": "cancelled", "related_record_id": LEAD}),
        KEEP,
        {"subject": "Cancelled: " + TITLE, "who_id": LEAD, "what_id": None},
        (),
        id="cancelled-keep-lead",
    ),
    pytest.param(work(), KEEP, {}, (), id="scheduled-keep-no-prefix"),
    pytest.param(work(link={"title": "t" * 255}), DELETE, {"subject": "t" * 255}, (), id="title-255-fits"),
    pytest.param(
        work(link={"title": "t" * 256}), DELETE, {"subject": "t" * 254 + "…"}, (), id="title-256-cut"
    ),
    pytest.param(
        work(link={"title": "\U0001f600" * 200}),
        DELETE,
        {"subject": "\U0001f600" * 127 + "…"},
        (),
        id="title-astral-counted-as-two",
    ),
    # Description
    pytest.param(work(link={"description": None}), DELETE, {"description": None}, (), id="description-none"),
    pytest.param(work(link={"description": ""}), DELETE, {"description": None}, (), id="description-empty"),
    pytest.param(
        work(link={"description": "d" * 32_000}),
        DELETE,
        {"description": "d" * 32_000},
        (),
        id="description-32000-fits",
    ),
    pytest.param(
        work(link={"description": D32001}),
        DELETE,
        {"description": "d" * (32_000 - len(marker(32_001))) + marker(32_001)},
        ("description cut (32,001 characters)",),
        id="description-32001-cut",
    ),
    pytest.param(
        work(link={"description": D45120}),
        DELETE,
        {"description": "e" * (32_000 - len(marker(45_120))) + marker(45_120)},
        ("description cut (45,120 characters)",),
        id="description-45120-cut",
    ),
    # Times
    pytest.param(work({"end_at": T0}), DELETE, {"end_at": T0}, (), id="zero-duration"),
    pytest.param(
        work({"end_at": T0 + 1_440 * MINUTE}),
        DELETE,
        {"end_at": T0 + 1_440 * MINUTE},
        (),
        id="exactly-1440-minutes",
    ),
    pytest.param(
        work({"end_at": T0 + timedelta(days=3)}),
        MULTIDAY,
        {"end_at": T0 + timedelta(days=3)},
        (),
        id="multiday-3-days",
    ),
    pytest.param(
        work({"end_at": T0 + timedelta(days=14)}),
        MULTIDAY,
        {"end_at": T0 + timedelta(days=14)},
        (),
        id="multiday-exactly-14-days",
    ),
    pytest.param(
        work({"start_at": T0.astimezone(PLUS2), "end_at": T1.astimezone(PLUS2)}),
        DELETE,
        {},
        (),
        id="offset-times-become-utc",
    ),
    # Link state and history
    pytest.param(
        work(link={"is_active": False}),
        DELETE,
        {},
        ("link inactive (booked meetings still sync)",),
        id="inactive-link-still-syncs",
    ),
    pytest.param(work(link={"is_active": None}), DELETE, {}, (), id="unknown-activity-syncs"),
    pytest.param(
        work({"link_id": OTHER_LINK_ID}, MOVED_LINK),
        DELETE,
        {"subject": "Webinar", "description": None, "what_id": CUSTOM, "mogli_event_id": CUSTOM},
        ("owner=link owner (rsvp)",),
        id="moved-to-another-link",
    ),
    pytest.param(
        work(
            {"start_at": T0 + timedelta(days=1), "end_at": T1 + timedelta(days=1)},
            activity_id=EVENT_ID,
            state="synced",
        ),
        DELETE,
        {"start_at": T0 + timedelta(days=1), "end_at": T1 + timedelta(days=1)},
        (),
        id="rescheduled",
    ),
    pytest.param(work(activity_id=EVENT_ID, state="failed"), DELETE, {}, (), id="retry-after-failure"),
    pytest.param(work(state="deleted_in_salesforce"), DELETE, {}, (), id="scheduled-after-salesforce-delete"),
    pytest.param(work(link={"state": "failed"}), DELETE, {}, (), id="link-state-failed-but-has-mogli-event"),
]


@pytest.mark.parametrize(("item", "options", "changes", "rule_parts"), UPSERTS)
def test_event_upsert(
    item: ActivityWork, options: MappingOptions, changes: dict[str, Any], rule_parts: tuple[str, ...]
) -> None:
    """A writable booking becomes exactly the expected Event fields, with a rule that explains them."""
    action = event_action(item, options)
    assert isinstance(action, UpsertEvent), action
    assert action.fields == dataclasses.replace(BASE_FIELDS, **changes)
    for part in rule_parts:
        assert part in action.rule
    assert action.fields.start_at.tzinfo is UTC and action.fields.end_at.tzinfo is UTC


@pytest.mark.parametrize(("item", "options", "changes", "rule_parts"), UPSERTS)
def test_event_invariants(
    item: ActivityWork, options: MappingOptions, changes: dict[str, Any], rule_parts: tuple[str, ...]
) -> None:
    """Every Event respects Salesforce: WhatId empty exactly for Leads, lengths within limits, 18-char ids."""
    action = event_action(item, options)
    assert isinstance(action, UpsertEvent)
    f = action.fields
    is_lead = f.who_id is not None and f.who_id.startswith("00Q")
    assert (f.what_id is None) == is_lead
    assert f.who_id is None or f.who_id[:3] in ("003", "00Q")
    assert f.mogli_event_id and len(f.mogli_event_id) == 18
    assert len(f.owner_id) == 18 and f.owner_id.startswith("005")
    assert salesforce_length(f.subject) <= 255
    assert f.description is None or salesforce_length(f.description) <= 32_000
    assert timedelta(0) <= f.end_at - f.start_at <= timedelta(days=14)
    assert event_action(item, options) == action  # pure: same input, same answer


# ---------------------------------------------------------------------------------------------- deletes

DELETES = [
    pytest.param(
        work({"status": "cancelled"}, activity_id=EVENT_ID, state="synced"),
        DELETE,
        DeleteEvent,
        "booking cancelled (sync.on_cancel=delete)",
        id="cancelled-known-event",
    ),
    pytest.param(
        work({"status": "cancelled"}),
        DELETE,
        DeleteEvent,
        "find it by External ID",
        id="cancelled-unknown-event-looked-up",
    ),
    pytest.param(
        work({"source_deleted": True}, activity_id=EVENT_ID, state="synced"),
        DELETE,
        DeleteEvent,
        "booking deleted in the scheduler",
        id="booking-deleted",
    ),
    pytest.param(
        work({"source_deleted": True}, activity_id=EVENT_ID),
        KEEP,
        DeleteEvent,
        "deleted in the scheduler",
        id="booking-deleted-even-with-keep",
    ),
    pytest.param(
        work({"source_deleted": True}, {"source_deleted": True}, activity_id=EVENT_ID),
        DELETE,
        DeleteEvent,
        "deleted",
        id="booking-and-link-deleted",
    ),
    pytest.param(
        work({"source_deleted": True}, None), DELETE, DeleteEvent, "deleted", id="deleted-link-missing"
    ),
    pytest.param(
        work({"status": "cancelled"}, {"source_deleted": True}),
        DELETE,
        DeleteEvent,
        "cancelled",
        id="cancelled-on-deleted-link",
    ),
    pytest.param(
        work({"status": "cancelled", "problems": ("start_at: bad",)}),
        DELETE,
        DeleteEvent,
        "cancelled",
        id="cancelled-with-bad-values",
    ),
    pytest.param(
        work({"status": "cancelled"}, owner=None),
        DELETE,
        DeleteEvent,
        "cancelled",
        id="cancelled-owner-unconnected",
    ),
    pytest.param(
        work({"status": "cancelled"}, RR), DELETE, DeleteEvent, "cancelled", id="cancelled-rr-no-assignee"
    ),
    pytest.param(
        work({"status": "cancelled", "end_at": T0 - MINUTE}),
        DELETE,
        DeleteEvent,
        "cancelled",
        id="cancelled-with-end-before-start",
    ),
    pytest.param(
        work({"source_deleted": True, "status": None}),
        DELETE,
        DeleteEvent,
        "deleted",
        id="deleted-without-status",
    ),
    pytest.param(
        work({"status": "cancelled"}, state="failed"),
        DELETE,
        DeleteEvent,
        "External ID",
        id="cancelled-after-failure-may-have-event",
    ),
    pytest.param(
        work({"status": "cancelled"}, activity_id=EVENT_ID, state="cancelled"),
        DELETE,
        NothingToDo,
        "already gone (ledger state cancelled)",
        id="cancelled-already-deleted",
    ),
    pytest.param(
        work({"source_deleted": True}, state="cancelled"),
        DELETE,
        NothingToDo,
        "already gone",
        id="deleted-after-cancellation",
    ),
    pytest.param(
        work({"source_deleted": True}, activity_id=EVENT_ID, state="deleted_in_salesforce"),
        DELETE,
        NothingToDo,
        "deleted_in_salesforce",
        id="deleted-after-salesforce-delete",
    ),
    pytest.param(
        work({"status": "cancelled"}, state="deleted_in_salesforce"),
        DELETE,
        NothingToDo,
        "already gone",
        id="cancelled-after-salesforce-delete",
    ),
]


@pytest.mark.parametrize(("item", "options", "kind", "reason"), DELETES)
def test_event_delete(item: ActivityWork, options: MappingOptions, kind: type, reason: str) -> None:
    """Cancelled (delete mode) and deleted bookings remove the Event, whatever else is wrong with them."""
    action = event_action(item, options)
    assert type(action) is kind, action
    assert isinstance(action, DeleteEvent | NothingToDo)
    assert reason in action.reason


# ---------------------------------------------------------------------------------------------- failures

F = FailureCode
FAILURES = [
    # Users
    pytest.param(
        work(link=RR), DELETE, F.NO_ASSIGNEE, None, None, "has no assigned_user_id", id="rr-no-assignee"
    ),
    pytest.param(
        work({"assigned_user_id": ""}, RR), DELETE, F.NO_ASSIGNEE, None, None, "", id="rr-blank-assignee"
    ),
    pytest.param(
        work(RR_BOOKING, RR, assignee=None),
        DELETE,
        F.USER_NOT_CONNECTED,
        ASSIGNEE_ID,
        None,
        "assigned user",
        id="rr-assignee-unknown",
    ),
    pytest.param(
        work(RR_BOOKING, RR, assignee=UserState(ASSIGNEE_ID, None)),
        DELETE,
        F.USER_NOT_CONNECTED,
        ASSIGNEE_ID,
        None,
        "has not connected a Salesforce user",
        id="rr-assignee-not-connected",
    ),
    pytest.param(
        work(RR_BOOKING, RR, assignee=UserState(ASSIGNEE_ID, "  ")),
        DELETE,
        F.USER_NOT_CONNECTED,
        ASSIGNEE_ID,
        None,
        "",
        id="rr-assignee-blank-salesforce-id",
    ),
    pytest.param(
        work(RR_BOOKING, RR, assignee=UserState(ASSIGNEE_ID, "005xyz")),
        DELETE,
        F.INVALID_USER_ID,
        None,
        None,
        "6 characters",
        id="rr-assignee-malformed",
    ),
    pytest.param(
        work(RR_BOOKING, RR, assignee=UserState(ASSIGNEE_ID, CONTACT)),
        DELETE,
        F.INVALID_USER_ID,
        None,
        None,
        "not a User id (prefix 005)",
        id="rr-assignee-is-a-contact",
    ),
    pytest.param(
        work(owner=None),
        DELETE,
        F.USER_NOT_CONNECTED,
        OWNER_ID,
        None,
        "link owner",
        id="one-on-one-owner-unknown",
    ),
    pytest.param(
        work(owner=UserState(OWNER_ID, None)),
        DELETE,
        F.USER_NOT_CONNECTED,
        OWNER_ID,
        None,
        OWNER_ID,
        id="one-on-one-owner-not-connected",
    ),
    pytest.param(
        work(link={"link_type": "rsvp"}, owner=UserState(OWNER_ID, None)),
        DELETE,
        F.USER_NOT_CONNECTED,
        OWNER_ID,
        None,
        "",
        id="rsvp-owner-not-connected",
    ),
    pytest.param(
        work(owner=UserState(OWNER_ID, PERSONAL)),
        DELETE,
        F.INVALID_USER_ID,
        None,
        None,
        "not only letters and digits",
        id="owner-salesforce-id-is-an-email",
    ),
    pytest.param(
        work(owner=UserState(OWNER_ID, OWNER_SF[:15] + "ZZZ")),
        DELETE,
        F.INVALID_USER_ID,
        None,
        None,
        "18 characters",
        id="owner-bad-checksum",
    ),
    pytest.param(
        work(link={"owner_user_id": None}),
        DELETE,
        F.NO_OWNER,
        None,
        None,
        "has no owner_id",
        id="link-without-owner",
    ),
    # Link
    pytest.param(
        work(link=None), DELETE, F.LINK_MISSING, None, None, "unknown to the ledger", id="link-missing"
    ),
    pytest.param(
        work({"link_id": None}),
        DELETE,
        F.LINK_MISSING,
        None,
        None,
        "has no link_id",
        id="booking-without-link",
    ),
    pytest.param(
        work({"link_id": OTHER_LINK_ID}),
        DELETE,
        F.LINK_MISMATCH,
        None,
        None,
        OTHER_LINK_ID,
        id="link-mismatch",
    ),
    pytest.param(
        work(link={"source_deleted": True}),
        DELETE,
        F.LINK_DELETED,
        None,
        None,
        "deleted in the scheduler",
        id="link-deleted",
    ),
    pytest.param(
        work({"status": "cancelled"}, {"source_deleted": True}),
        KEEP,
        F.LINK_DELETED,
        None,
        None,
        "",
        id="cancelled-keep-on-deleted-link",
    ),
    pytest.param(
        work(link={"link_type": "group"}),
        DELETE,
        F.UNKNOWN_LINK_TYPE,
        None,
        None,
        "link_type 'group'; known: one_on_one, round_robin, rsvp",
        id="unknown-link-type",
    ),
    pytest.param(
        work(link={"link_type": None}),
        DELETE,
        F.UNKNOWN_LINK_TYPE,
        None,
        None,
        "has no link_type",
        id="no-link-type",
    ),
    pytest.param(
        work(link={"link_type": "One_On_One"}),
        DELETE,
        F.UNKNOWN_LINK_TYPE,
        None,
        None,
        "",
        id="link-type-wrong-case",
    ),
    pytest.param(
        work(link={"link_type": "rsvp "}),
        DELETE,
        F.UNKNOWN_LINK_TYPE,
        None,
        None,
        "",
        id="link-type-trailing-space",
    ),
    pytest.param(
        work(link={"link_type": PERSONAL}),
        DELETE,
        F.UNKNOWN_LINK_TYPE,
        None,
        None,
        "a value of 20 characters",
        id="link-type-odd-value-not-quoted",
    ),
    pytest.param(work(link={"title": None}), DELETE, F.BAD_VALUE, None, None, "empty title", id="title-none"),
    pytest.param(
        work(link={"title": "  "}), DELETE, F.BAD_VALUE, None, None, "empty title", id="title-blank"
    ),
    pytest.param(
        work(link={"mogli_event_id": None, "state": "failed"}),
        DELETE,
        F.MOGLI_EVENT_FAILED,
        None,
        LINK_ID,
        "could not be written",
        id="mogli-event-failed",
    ),
    pytest.param(
        work(link={"mogli_event_id": None, "state": "pending"}),
        DELETE,
        F.MOGLI_EVENT_PENDING,
        None,
        LINK_ID,
        "not written yet",
        id="mogli-event-pending",
    ),
    pytest.param(
        work(link={"state": "deleted_in_salesforce"}),
        DELETE,
        F.MOGLI_EVENT_DELETED,
        None,
        LINK_ID,
        "was deleted in Salesforce",
        id="mogli-event-deleted-in-salesforce",
    ),
    pytest.param(
        work(link={"state": "deleted_in_salesforce"}, owner=None),
        DELETE,
        F.USER_NOT_CONNECTED,
        OWNER_ID,
        None,
        "",
        id="order-owner-before-deleted-mogli-event",
    ),
    pytest.param(
        work({"status": "cancelled"}, {"state": "deleted_in_salesforce"}),
        KEEP,
        F.MOGLI_EVENT_DELETED,
        None,
        LINK_ID,
        "",
        id="cancelled-keep-mogli-event-deleted",
    ),
    pytest.param(
        work(link={"mogli_event_id": "a01-broken"}),
        DELETE,
        F.INVALID_MOGLI_EVENT_ID,
        None,
        None,
        "10 characters",
        id="mogli-event-id-malformed",
    ),
    # Booking values
    pytest.param(
        work({"end_at": T0 - 30 * MINUTE}),
        DELETE,
        F.END_BEFORE_START,
        None,
        None,
        "ends 30 minutes before it starts",
        id="end-before-start",
    ),
    pytest.param(
        work({"end_at": T0 - timedelta(seconds=90)}),
        DELETE,
        F.END_BEFORE_START,
        None,
        None,
        "1.5 minutes",
        id="end-90-seconds-before-start",
    ),
    pytest.param(
        work({"status": "cancelled", "end_at": T0 - MINUTE}),
        KEEP,
        F.END_BEFORE_START,
        None,
        None,
        "",
        id="cancelled-keep-end-before-start",
    ),
    pytest.param(
        work({"start_at": None}), DELETE, F.MISSING_TIMES, None, None, "has no start_at", id="missing-start"
    ),
    pytest.param(
        work({"end_at": None}), DELETE, F.MISSING_TIMES, None, None, "has no end_at", id="missing-end"
    ),
    pytest.param(
        work({"start_at": None, "end_at": None}),
        DELETE,
        F.MISSING_TIMES,
        None,
        None,
        "start_at and end_at",
        id="missing-both",
    ),
    pytest.param(
        work({"start_at": T0.replace(tzinfo=None)}),
        DELETE,
        F.BAD_VALUE,
        None,
        None,
        "start_at without time zone",
        id="naive-start",
    ),
    pytest.param(
        work({"end_at": T0 + 1_441 * MINUTE}),
        DELETE,
        F.TOO_LONG,
        None,
        None,
        "lasts 1,441 minutes; Salesforce allows at most 1,440 minutes (multiday events off)",
        id="1441-minutes",
    ),
    pytest.param(
        work({"end_at": T0 + 1_440 * MINUTE + timedelta(seconds=1)}),
        DELETE,
        F.TOO_LONG,
        None,
        None,
        "",
        id="1440-minutes-and-a-second",
    ),
    pytest.param(
        work({"end_at": T0 + timedelta(days=3)}),
        DELETE,
        F.TOO_LONG,
        None,
        None,
        "multiday events off",
        id="3-days-without-multiday",
    ),
    pytest.param(
        work({"end_at": T0 + timedelta(days=14) + MINUTE}),
        MULTIDAY,
        F.TOO_LONG,
        None,
        None,
        "at most 20,160 minutes (multiday events on)",
        id="over-14-days-with-multiday",
    ),
    pytest.param(
        work({"problems": ("start_at: not a timestamp",)}),
        DELETE,
        F.BAD_VALUE,
        None,
        None,
        "could not be converted: start_at: not a timestamp",
        id="one-problem",
    ),
    pytest.param(
        work({"problems": ("start_at: bad", "status: bad")}),
        DELETE,
        F.BAD_VALUE,
        None,
        None,
        "start_at: bad; status: bad",
        id="problems-listed",
    ),
    pytest.param(
        work({"status": None}),
        DELETE,
        F.UNKNOWN_STATUS,
        None,
        None,
        "has no status; known: scheduled",
        id="status-none",
    ),
    pytest.param(
        work({"status": "rescheduled"}),
        DELETE,
        F.UNKNOWN_STATUS,
        None,
        None,
        "status 'rescheduled'",
        id="status-unknown",
    ),
    pytest.param(
        work({"status": "Scheduled"}), DELETE, F.UNKNOWN_STATUS, None, None, "", id="status-wrong-case"
    ),
    pytest.param(
        work({"status": PERSONAL}),
        KEEP,
        F.UNKNOWN_STATUS,
        None,
        None,
        "a value of 20 characters",
        id="status-odd-value-not-quoted",
    ),
    pytest.param(
        work({"related_record_id": PERSONAL}),
        DELETE,
        F.INVALID_RELATED_RECORD,
        None,
        None,
        "20 characters, not only letters and digits",
        id="related-record-is-an-email",
    ),
    pytest.param(
        work({"related_record_id": CONTACT + "X"}),
        DELETE,
        F.INVALID_RELATED_RECORD,
        None,
        None,
        "19 characters",
        id="related-record-19-chars",
    ),
    pytest.param(
        work({"related_record_id": CONTACT[:15] + "999"}),
        DELETE,
        F.INVALID_RELATED_RECORD,
        None,
        None,
        "",
        id="related-record-bad-checksum",
    ),
    # Order: booking faults before link faults before users before the Mogli Event
    pytest.param(
        work({"end_at": T0 - MINUTE}, owner=None),
        DELETE,
        F.END_BEFORE_START,
        None,
        None,
        "",
        id="order-times-before-owner",
    ),
    pytest.param(
        work({"related_record_id": PERSONAL}, None),
        DELETE,
        F.INVALID_RELATED_RECORD,
        None,
        None,
        "",
        id="order-related-record-before-link",
    ),
    pytest.param(
        work({"problems": ("x: bad",), "status": "odd"}),
        DELETE,
        F.BAD_VALUE,
        None,
        None,
        "",
        id="order-problems-before-status",
    ),
    pytest.param(
        work(link={"link_type": "group", "mogli_event_id": None, "state": "failed"}),
        DELETE,
        F.UNKNOWN_LINK_TYPE,
        None,
        None,
        "",
        id="order-link-type-before-mogli-event",
    ),
    pytest.param(
        work(link={"mogli_event_id": None, "state": "failed"}, owner=None),
        DELETE,
        F.USER_NOT_CONNECTED,
        OWNER_ID,
        None,
        "",
        id="order-owner-before-mogli-event",
    ),
    pytest.param(
        work(RR_BOOKING, {**RR, "mogli_event_id": None, "state": "failed"}, assignee=None),
        DELETE,
        F.USER_NOT_CONNECTED,
        ASSIGNEE_ID,
        None,
        "",
        id="order-assignee-before-mogli-event",
    ),
    pytest.param(
        work({"status": "odd"}, None), DELETE, F.UNKNOWN_STATUS, None, None, "", id="order-status-before-link"
    ),
]


@pytest.mark.parametrize(("item", "options", "code", "user", "link", "fragment"), FAILURES)
def test_event_failure(
    item: ActivityWork,
    options: MappingOptions,
    code: FailureCode,
    user: str | None,
    link: str | None,
    fragment: str,
) -> None:
    """A booking the rules cannot write fails with its code, what it waits for, and a readable reason."""
    action = event_action(item, options)
    assert isinstance(action, RuleFailure), action
    assert action.code is code
    assert action.waiting_for_user == user
    assert action.waiting_for_link == link
    assert fragment in action.message
    assert (user is not None or link is not None) == (code in WAITING_CODES)


@pytest.mark.parametrize(("item", "options", "code", "user", "link", "fragment"), FAILURES)
def test_failure_messages_carry_no_personal_data(
    item: ActivityWork,
    options: MappingOptions,
    code: FailureCode,
    user: str | None,
    link: str | None,
    fragment: str,
) -> None:
    """Failure messages name ids and fields, never titles, descriptions or stray personal values."""
    action = event_action(item, options)
    assert isinstance(action, RuleFailure)
    for secret in (PERSONAL, "jane", TITLE, DESCRIPTION):
        assert secret not in action.message
    assert BOOKING_ID in action.message or LINK_ID in action.message or OTHER_LINK_ID in action.message


# ---------------------------------------------------------------------------------------------- Mogli Event

BASE_MOGLI = MogliEventFields(
    link_id=LINK_ID, name=TITLE, link_type="one_on_one", description=DESCRIPTION, owner_id=OWNER_SF
)
MOGLI_OK = [
    pytest.param(link_work(), {}, id="one-on-one"),
    pytest.param(link_work(link_type="round_robin"), {"link_type": "round_robin"}, id="round-robin"),
    pytest.param(link_work(link_type="rsvp"), {"link_type": "rsvp"}, id="rsvp"),
    pytest.param(link_work(title="n" * 80), {"name": "n" * 80}, id="name-80-fits"),
    pytest.param(link_work(title="n" * 81), {"name": "n" * 79 + "…"}, id="name-81-cut"),
    pytest.param(link_work(title="\U0001f4c5" * 50), {"name": "\U0001f4c5" * 39 + "…"}, id="name-astral-cut"),
    pytest.param(
        link_work(description=D45120),
        {"description": "e" * (32_000 - len(marker(45_120))) + marker(45_120)},
        id="description-cut",
    ),
    pytest.param(link_work(description=None), {"description": None}, id="description-none"),
    pytest.param(link_work(description=""), {"description": None}, id="description-empty"),
    pytest.param(link_work(owner=UserState(OWNER_ID, OWNER_SF15)), {}, id="owner-15-normalised"),
    pytest.param(
        link_work(owner=UserState(OWNER_ID, OWNER_SF.lower())), {}, id="owner-lowercase-18-normalised"
    ),
    pytest.param(link_work(is_active=False), {}, id="inactive-link-still-written"),
    pytest.param(link_work(source_deleted=True), {}, id="deleted-link-with-mogli-event-kept"),
    pytest.param(link_work(mogli_event_id=None, state="failed"), {}, id="retry-after-failed-link"),
    pytest.param(link_work(state="deleted_in_salesforce"), {}, id="recreated-after-salesforce-delete"),
    pytest.param(
        link_work(mogli_event_id=None, state="pending", duration_minutes=None), {}, id="first-booking"
    ),
]


@pytest.mark.parametrize(("item", "changes"), MOGLI_OK)
def test_mogli_event_fields(item: LinkWork, changes: dict[str, Any]) -> None:
    """A writable link becomes exactly the expected Mogli Event fields."""
    result = mogli_event_for(item)
    assert result == dataclasses.replace(BASE_MOGLI, **changes)


MOGLI_FAIL = [
    pytest.param(link_work(owner=None), F.USER_NOT_CONNECTED, OWNER_ID, "link owner", id="owner-unknown"),
    pytest.param(
        link_work(owner=UserState(OWNER_ID, None)), F.USER_NOT_CONNECTED, OWNER_ID, "", id="not-connected"
    ),
    pytest.param(
        link_work(owner=UserState(OWNER_ID, "")), F.USER_NOT_CONNECTED, OWNER_ID, "", id="empty-sf-id"
    ),
    pytest.param(
        link_work(owner=UserState(OWNER_ID, OWNER_SF, "0a000000-0000-4000-8000-00000000000a")),
        F.CROSS_ORG_USER,
        OWNER_ID,
        "belongs to another org than the link",
        id="owner-of-another-org",
    ),
    pytest.param(
        link_work(owner=UserState(OWNER_ID, PERSONAL)),
        F.INVALID_USER_ID,
        None,
        "20 characters",
        id="owner-id-malformed",
    ),
    pytest.param(
        link_work(owner=UserState(OWNER_ID, CONTACT)),
        F.INVALID_USER_ID,
        None,
        "not a User id",
        id="owner-id-not-a-user",
    ),
    pytest.param(link_work(owner_user_id=None), F.NO_OWNER, None, "has no owner_id", id="no-owner"),
    pytest.param(link_work(link_type="webinar"), F.UNKNOWN_LINK_TYPE, None, "'webinar'", id="unknown-type"),
    pytest.param(link_work(link_type=None), F.UNKNOWN_LINK_TYPE, None, "no link_type", id="no-type"),
    pytest.param(link_work(title=None), F.BAD_VALUE, None, "empty title", id="title-none"),
    pytest.param(link_work(title=""), F.BAD_VALUE, None, "empty title", id="title-empty"),
    pytest.param(
        link_work(source_deleted=True, mogli_event_id=None),
        F.LINK_DELETED,
        None,
        "deleted in the scheduler before it had a Mogli Event",
        id="deleted-before-first-write",
    ),
    pytest.param(
        link_work(link_type="group", owner=None), F.UNKNOWN_LINK_TYPE, None, "", id="order-type-first"
    ),
]


@pytest.mark.parametrize(("item", "code", "user", "fragment"), MOGLI_FAIL)
def test_mogli_event_failure(item: LinkWork, code: FailureCode, user: str | None, fragment: str) -> None:
    """A link the rules cannot write fails with its code, the user it waits for and no personal data."""
    result = mogli_event_for(item)
    assert isinstance(result, RuleFailure), result
    assert result.code is code
    assert result.waiting_for_user == user
    assert result.waiting_for_link is None
    assert fragment in result.message
    assert LINK_ID in result.message
    for secret in (PERSONAL, TITLE, DESCRIPTION):
        assert secret not in result.message


# ---------------------------------------------------------------------------------------------- ids and text

NORMALISE = [
    pytest.param(None, None, id="none"),
    pytest.param("", None, id="empty"),
    pytest.param("   ", None, id="blank"),
    pytest.param(CONTACT15, CONTACT, id="15-to-18"),
    pytest.param(CONTACT, CONTACT, id="18-kept"),
    pytest.param(LEAD.lower(), LEAD, id="18-lowercase-canonical"),
    pytest.param(f"\t{LEAD15}\n", LEAD, id="whitespace-stripped"),
    pytest.param(PERSONAL, None, id="email-is-malformed"),
    pytest.param(CONTACT15[:14], None, id="14-chars"),
    pytest.param(CONTACT[:15] + "999", None, id="bad-checksum"),
]


@pytest.mark.parametrize(("value", "expected"), NORMALISE)
def test_normalise_id(value: str | None, expected: str | None) -> None:
    """normalise_id gives the canonical 18-character id, or None for absent and malformed values; no raise."""
    assert normalise_id(value) == expected


CUTS = [
    pytest.param("abc", 3, "…", "abc", id="fits-exactly"),
    pytest.param("abcd", 3, "…", "ab…", id="one-over"),
    pytest.param("abcd", 3, "", "abc", id="no-marker"),
    pytest.param("", 0, "", "", id="empty-in-zero"),
    pytest.param("abcdef", 4, "[..]", "[..]", id="marker-fills-the-limit"),
    pytest.param("a\U0001f600b", 3, "", "a\U0001f600", id="astral-fits-as-two"),
    pytest.param("a\U0001f600b", 2, "", "a", id="astral-not-split"),
    pytest.param("\U0001f600\U0001f600", 3, "…", "\U0001f600…", id="astral-with-marker"),
    pytest.param("ab\ud800cd", 3, "", "ab\ud800", id="lone-surrogate-counts-one"),
]


@pytest.mark.parametrize(("text", "limit", "mark", "expected"), CUTS)
def test_cut_examples(text: str, limit: int, mark: str, expected: str) -> None:
    """cut keeps the head that fits and appends the marker only when it cut something."""
    assert cut(text, limit, mark) == expected


def test_cut_refuses_a_marker_longer_than_the_limit() -> None:
    """A marker that cannot fit is a programming error, reported as ValueError."""
    with pytest.raises(ValueError, match="does not fit"):
        cut("abcdef", 2, "[...]")


def test_cut_properties_on_random_text() -> None:
    """For random text: within the limit, marker present iff cut, head preserved, idempotent."""
    rng = random.Random(4120)
    alphabet = ["a", "Z", " ", "\n", "é", "中", "\U0001f600", "\U0001d11e", "…"]
    mark = description_marker(99)
    for _ in range(3_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        limit = rng.randint(len(mark), 130)
        result = cut(text, limit, mark)
        assert salesforce_length(result) <= limit
        was_cut = salesforce_length(text) > limit
        assert result.endswith(mark) == was_cut or text.endswith(mark)
        if was_cut:
            head = result[: -len(mark)]
            assert text.startswith(head)
            assert salesforce_length(head) >= limit - len(mark) - 1  # at most one astral character short
        else:
            assert result == text
        assert cut(result, limit, mark) == result


@pytest.mark.parametrize("size", [0, 1, 31_999, 32_000, 32_001, 32_000 + 200, 100_000])
def test_cut_description_sizes(size: int) -> None:
    """Descriptions up to 32,000 pass untouched; longer ones end with a marker naming the original length."""
    text = "x" * size
    result = cut_description(text)
    if size == 0:
        assert result is None
        return
    assert result is not None
    assert len(result) <= DESCRIPTION_LIMIT
    if size <= DESCRIPTION_LIMIT:
        assert result == text
    else:
        assert len(result) == DESCRIPTION_LIMIT
        assert result.endswith(f"[... truncated by mogli-bridge: {size:,} characters in the scheduler]")


def test_mapping_options_refuse_an_unknown_cancel_mode() -> None:
    """MappingOptions rejects an on_cancel other than delete or keep."""
    with pytest.raises(ValueError, match="on_cancel"):
        MappingOptions(on_cancel="archive")  # type: ignore[arg-type]


def test_every_failure_code_is_exercised() -> None:
    """The tables cover every FailureCode (a new code needs a row)."""
    seen = {p.values[2] for p in FAILURES} | {p.values[1] for p in MOGLI_FAIL}
    assert seen == set(FailureCode)


def test_failure_codes_are_their_names() -> None:
    """Codes are stored as their upper-case names, the way the ledger matches USER_NOT_CONNECTED."""
    for code in FailureCode:
        assert code.value == code.name
    assert FailureCode.USER_NOT_CONNECTED == "USER_NOT_CONNECTED"


def test_tables_are_large_enough() -> None:
    """The rule tables hold at least 60 rows across both functions."""
    assert len(UPSERTS) + len(DELETES) + len(FAILURES) + len(MOGLI_OK) + len(MOGLI_FAIL) >= 60


def _action_kinds(actions: list[EventAction]) -> set[type]:
    return {type(a) for a in actions}


def test_all_four_action_kinds_occur() -> None:
    """The tables reach every kind of EventAction."""
    actions = [
        event_action(cast(ActivityWork, p.values[0]), cast(MappingOptions, p.values[1]))
        for p in (*UPSERTS, *DELETES, *FAILURES)
    ]
    assert _action_kinds(actions) == {UpsertEvent, DeleteEvent, NothingToDo, RuleFailure}


# ---------------------------------------------------------------------------------------------- the matrix

RELATED = {"contact": CONTACT15, "lead": LEAD15, "account": ACCOUNT, "custom": CUSTOM, "none": None}


@pytest.mark.parametrize("link_type", ["one_on_one", "round_robin", "rsvp"])
@pytest.mark.parametrize("related", list(RELATED))
@pytest.mark.parametrize("status", ["scheduled", "cancelled"])
@pytest.mark.parametrize("on_cancel", ["delete", "keep"])
@pytest.mark.parametrize("deleted", [False, True], ids=["live", "source-deleted"])
def test_contract_matrix(
    link_type: str, related: str, status: str, on_cancel: Literal["delete", "keep"], deleted: bool
) -> None:
    """Every combination of link type, related object, status, cancel mode and deletion follows CONTRACT 5."""
    item = work(
        {"related_record_id": RELATED[related], "status": status, "source_deleted": deleted, **RR_BOOKING},
        {"link_type": link_type},
    )
    action = event_action(item, MappingOptions(on_cancel=on_cancel))
    if deleted or (status == "cancelled" and on_cancel == "delete"):
        assert isinstance(action, DeleteEvent)
        return
    assert isinstance(action, UpsertEvent)
    f = action.fields
    assert f.owner_id == (ASSIGNEE_SF if link_type == "round_robin" else OWNER_SF)
    assert f.who_id == {"contact": CONTACT, "lead": LEAD}.get(related)
    assert f.what_id == (None if related == "lead" else MOGLI)
    assert f.mogli_event_id == MOGLI
    assert f.subject == ("Cancelled: " + TITLE if status == "cancelled" else TITLE)
    assert (f.description, f.start_at, f.end_at) == (DESCRIPTION, T0, T1)


# ---------------------------------------------------------------------------------------------- robustness

_CHOICES: dict[str, list[Any]] = {
    "link_type": ["one_on_one", "round_robin", "rsvp", None, "", "group", PERSONAL],
    "owner_user_id": [OWNER_ID, None, ""],
    "title": [TITLE, None, "", " ", "t" * 300, "\U0001f600" * 130],
    "description": [DESCRIPTION, None, "", "d" * 40_000],
    "is_active": [True, False, None],
    "link_deleted": [False, True],
    "mogli_event_id": [MOGLI, MOGLI15, None, "broken", MOGLI.lower()],
    "link_state": ["synced", "pending", "failed", "unbooked", "deleted_in_salesforce"],
    "link_present": [True, True, False],
    "assigned_user_id": [ASSIGNEE_ID, None, ""],
    "start_at": [T0, None, T0.replace(tzinfo=None), T0.astimezone(timezone(timedelta(hours=-5)))],
    "duration": [timedelta(0), 30 * MINUTE, -MINUTE, timedelta(days=1, seconds=1), timedelta(days=20)],
    "end_missing": [False, False, True],
    "status": ["scheduled", "cancelled", None, "", "Scheduled", PERSONAL],
    "related_record_id": [CONTACT, CONTACT15, LEAD, LEAD.lower(), ACCOUNT, None, "", PERSONAL, "x" * 18],
    "booking_deleted": [False, False, True],
    "problems": [(), (), ("bookings.start_at: 'x' is not a timestamp",)],
    "owner": [
        OWNER,
        None,
        UserState(OWNER_ID, None),
        UserState(OWNER_ID, "bad"),
        UserState(OWNER_ID, CONTACT),
    ],
    "assignee": [ASSIGNEE, None, UserState(ASSIGNEE_ID, ""), UserState(ASSIGNEE_ID, ASSIGNEE_SF15)],
    "activity_id": [None, EVENT_ID],
    "state": ["pending", "failed", "synced", "cancelled", "deleted_in_salesforce"],
    "options": [DELETE, KEEP, MULTIDAY, MappingOptions(on_cancel="keep", multiday_events=True)],
}


def _random_work(rng: random.Random) -> tuple[ActivityWork, MappingOptions]:
    """An ActivityWork built from a random pick of good and bad values for every input."""
    # The first value of each list is a good one; favour it so that every outcome kind occurs.
    pick = {
        name: values[0] if rng.random() < 0.85 else rng.choice(values) for name, values in _CHOICES.items()
    }
    link = dataclasses.replace(
        BASE_LINK,
        link_type=pick["link_type"],
        owner_user_id=pick["owner_user_id"],
        title=pick["title"],
        description=pick["description"],
        is_active=pick["is_active"],
        source_deleted=pick["link_deleted"],
        mogli_event_id=pick["mogli_event_id"],
        state=pick["link_state"],
    )
    start = pick["start_at"]
    end = None if pick["end_missing"] or start is None else start + pick["duration"]
    booking = {
        "assigned_user_id": pick["assigned_user_id"],
        "start_at": start,
        "end_at": end,
        "status": pick["status"],
        "related_record_id": pick["related_record_id"],
        "source_deleted": pick["booking_deleted"],
        "problems": pick["problems"],
    }
    item = work(
        booking,
        link if pick["link_present"] else None,
        owner=pick["owner"],
        assignee=pick["assignee"],
        activity_id=pick["activity_id"],
        state=pick["state"],
    )
    return item, pick["options"]


def test_event_action_never_raises_and_keeps_its_promises() -> None:
    """On random mixes of good and bad inputs the rules answer with a value, never an exception.

    Every Event they produce is one Salesforce accepts.
    """
    rng = random.Random(1124)
    kinds: set[type] = set()
    for _ in range(5_000):
        item, options = _random_work(rng)
        action = event_action(item, options)
        kinds.add(type(action))
        if isinstance(action, RuleFailure):
            assert action.message and PERSONAL not in action.message and TITLE not in action.message
            assert (
                action.waiting_for_user or action.waiting_for_link
            ) is None or action.code in WAITING_CODES
        elif isinstance(action, UpsertEvent):
            f = action.fields
            assert not item.booking.source_deleted
            assert f.owner_id[:3] == "005" and len(f.owner_id) == 18
            assert f.who_id is None or (len(f.who_id) == 18 and f.who_id[:3] in ("003", "00Q"))
            assert (f.what_id is None) == (f.who_id is not None and f.who_id[:3] == "00Q")
            assert len(f.mogli_event_id) == 18
            assert 0 < salesforce_length(f.subject) <= 255
            assert f.description is None or salesforce_length(f.description) <= 32_000
            cap = timedelta(days=14 if options.multiday_events else 1)
            assert timedelta(0) <= f.end_at - f.start_at <= cap
        else:
            assert item.booking.source_deleted or item.booking.status == "cancelled"
    assert kinds == {UpsertEvent, DeleteEvent, NothingToDo, RuleFailure}


def test_mogli_event_for_never_raises_and_keeps_its_promises() -> None:
    """On random links and owners the Mogli Event rule answers with acceptable fields or a failure."""
    rng = random.Random(80)
    for _ in range(2_000):
        item, _ = _random_work(rng)
        link = item.link or BASE_LINK
        result = mogli_event_for(LinkWork(link=link, owner=item.owner, version=1, attempts=0))
        if isinstance(result, RuleFailure):
            assert PERSONAL not in result.message and TITLE not in result.message
            continue
        assert 0 < salesforce_length(result.name) <= 80
        assert result.link_type in ("one_on_one", "round_robin", "rsvp")
        assert result.owner_id[:3] == "005" and len(result.owner_id) == 18
        assert result.description is None or salesforce_length(result.description) <= 32_000


RULES = [
    pytest.param(
        work(), DELETE, "owner=link owner (one_on_one); who=Contact; what=Mogli Event", id="one-on-one"
    ),
    pytest.param(
        work({"related_record_id": LEAD, **RR_BOOKING}, RR),
        DELETE,
        "owner=assigned user (round_robin); who=Lead; "
        "what=empty (Lead WhoId), Mogli Event in Mogli_Event_Id__c",
        id="round-robin-lead",
    ),
    pytest.param(
        work(
            {"related_record_id": ACCOUNT, "status": "cancelled"}, {"link_type": "rsvp", "is_active": False}
        ),
        KEEP,
        "owner=link owner (rsvp); who=empty (related record is Account 001, not a Contact or Lead); "
        "what=Mogli Event; subject prefixed (cancelled, sync.on_cancel=keep); "
        "link inactive (booked meetings still sync)",
        id="rsvp-account-cancelled-inactive",
    ),
    pytest.param(
        work({"related_record_id": None}, {"description": D45120}),
        DELETE,
        "owner=link owner (one_on_one); who=empty (no related record); what=Mogli Event; "
        "description cut (45,120 characters)",
        id="no-who-long-description",
    ),
]


@pytest.mark.parametrize(("item", "options", "rule"), RULES)
def test_rule_text_for_the_journal(item: ActivityWork, options: MappingOptions, rule: str) -> None:
    """The journal's rule line reads as a fixed, complete account of each choice."""
    action = event_action(item, options)
    assert isinstance(action, UpsertEvent)
    assert action.rule == rule


@pytest.mark.parametrize("bad_id", ["42", "not-a-uuid", "b0000000-0000-4000-8000-00000000000", "a@b.example"])
def test_non_uuid_ids_are_bad_values_described_by_form_only(bad_id: str) -> None:
    """A booking or link id that is not a UUID fails the row, and the message never quotes the value."""
    failure = event_action(work({"booking_id": bad_id}), DELETE)
    assert isinstance(failure, RuleFailure) and failure.code is FailureCode.BAD_VALUE
    assert bad_id not in failure.message and "UUID" in failure.message
    link_failure = mogli_event_for(link_work(link_id=bad_id))
    assert isinstance(link_failure, RuleFailure) and link_failure.code is FailureCode.BAD_VALUE
    assert bad_id not in link_failure.message
