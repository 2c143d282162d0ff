"""The rules: what the ledger knows of a link, a booking and users becomes the desired Salesforce state.

(Over 400 lines on purpose: this is the whole rule set of one booking, and its checks read in the order they
run; text and id helpers live in `text.py`, failure handling in `push_outcomes.py`.)

Pure: no clock, no I/O, no logging; everything arrives as arguments and every outcome is a value. Decisions
taken here (CONTRACT section 5 fixes the rest):

- Lengths are counted in UTF-16 code units (Java's count; a character outside the BMP counts twice). That
  count is never below the count of code points, so a value that fits it fits whichever Salesforce applies.
- A deactivated link (`is_active` false) still syncs: it only stops new bookings in the scheduler, and the
  meetings already booked on it still happen.
- A link deleted in the scheduler keeps its Mogli Event (deleting it would cascade-delete the Events that
  point at it); one that never got a Mogli Event gets none. Bookings on it fail with `LINK_DELETED` unless
  they are deletes themselves.
- A malformed `related_record_id` fails the booking (`INVALID_RELATED_RECORD`) rather than silently writing
  an Event without its Name: the timeline entry is the point of the Event.
- A delete is a `DeleteEvent` even when the ledger knows no Event id: a crash between the push and its record
  can leave an Event the ledger never heard of, so the worker looks it up by External ID. `NothingToDo` only
  when the ledger's state says the Event is already gone (`cancelled`, `deleted_in_salesforce`).
- A user of another org than the record (`UserState.org_id` against the booking's or the link's org_id) is
  refused with `CROSS_ORG_USER` before its Salesforce id is even read: that id names a User of another org.
  It waits for the user's row to change. A related record id needs no rule: an org refuses ids it does not
  know. With tenancy off every org_id is None, so the check never refuses.
- Checks run in a fixed order: the booking's own faults first (they need a fix in the scheduler), then the
  link's, then the users', then the Mogli Event. A failure that waits (`WAITING_CODES`) is therefore the
  only thing between the row and Salesforce.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from bridge import sfid
from bridge.records.outbound import ActivityWork, EventFields, LinkWork, MogliEventFields
from bridge.records.source import BookingState, LinkState, UserState
from bridge.rules.text import (
    blank,
    cut,
    cut_description,
    label,
    normalise_id,
    shape,
)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

NAME_LIMIT = 80
SUBJECT_LIMIT = 255
MAX_MINUTES = 1_440
MULTIDAY_MAX_MINUTES = 14 * 1_440
ELLIPSIS = "…"

SCHEDULED = "scheduled"
CANCELLED = "cancelled"
# Ledger states in which the booking's Event is known to be gone from Salesforce.
_GONE_STATES = frozenset({"cancelled", "deleted_in_salesforce"})
_OBJECT_NAMES = {"001": "Account", "005": "User", "006": "Opportunity", "500": "Case", "701": "Campaign"}
# Code-like values (no spaces, short) are quoted in messages; anything else could be free text.


class LinkType(enum.StrEnum):
    """The scheduling link types the bridge knows."""

    ONE_ON_ONE = "one_on_one"
    ROUND_ROBIN = "round_robin"
    RSVP = "rsvp"


class FailureCode(enum.StrEnum):
    """Why a rule refused a record; the value is stored as the row's error code."""

    USER_NOT_CONNECTED = "USER_NOT_CONNECTED"  # waits: syncs once the user connects Salesforce
    CROSS_ORG_USER = "CROSS_ORG_USER"  # waits: the user belongs to another org than the record (CONTRACT §9)
    NO_OWNER = "NO_OWNER"  # the link names no owner
    NO_ASSIGNEE = "NO_ASSIGNEE"  # a round-robin booking without an assigned user
    LINK_MISSING = "LINK_MISSING"
    LINK_DELETED = "LINK_DELETED"
    LINK_MISMATCH = "LINK_MISMATCH"  # the ledger handed a link other than the booking's (a bug upstream)
    UNKNOWN_LINK_TYPE = "UNKNOWN_LINK_TYPE"
    UNKNOWN_STATUS = "UNKNOWN_STATUS"
    END_BEFORE_START = "END_BEFORE_START"
    MISSING_TIMES = "MISSING_TIMES"
    TOO_LONG = "TOO_LONG"  # over the Salesforce duration cap
    BAD_VALUE = "BAD_VALUE"  # a source value that could not be converted, or is empty where required
    INVALID_RELATED_RECORD = "INVALID_RELATED_RECORD"
    INVALID_USER_ID = "INVALID_USER_ID"
    INVALID_MOGLI_EVENT_ID = "INVALID_MOGLI_EVENT_ID"
    MOGLI_EVENT_PENDING = "MOGLI_EVENT_PENDING"  # waits: the link's Mogli Event is not written yet
    MOGLI_EVENT_FAILED = "MOGLI_EVENT_FAILED"  # waits: the link's Mogli Event could not be written
    MOGLI_EVENT_DELETED = "MOGLI_EVENT_DELETED"  # waits: someone deleted the Mogli Event in Salesforce


# Failures that clear by themselves once the named user connects or the named link's Mogli Event is written.
WAITING_CODES = frozenset(
    {
        FailureCode.USER_NOT_CONNECTED,
        FailureCode.CROSS_ORG_USER,
        FailureCode.MOGLI_EVENT_PENDING,
        FailureCode.MOGLI_EVENT_FAILED,
        FailureCode.MOGLI_EVENT_DELETED,
    }
)
# The waiting failures that clear when the named user's row changes (the rest wait for a link).
USER_WAITING_CODES = frozenset({FailureCode.USER_NOT_CONNECTED, FailureCode.CROSS_ORG_USER})


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """A record the rules refuse, with a readable reason that names fields and ids but no personal data.

    `waiting_for_user` / `waiting_for_link` name the scheduler user or link whose fix lets the row sync by
    itself (the user connects Salesforce; the link's Mogli Event gets written).
    """

    code: FailureCode
    message: str
    waiting_for_user: str | None = None
    waiting_for_link: str | None = None


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """Org and operator choices the rules follow."""

    on_cancel: Literal["delete", "keep"] = "delete"
    multiday_events: bool = False
    cancelled_prefix: str = "Cancelled: "

    def __post_init__(self) -> None:
        if self.on_cancel not in ("delete", "keep"):
            raise ValueError(f"on_cancel must be 'delete' or 'keep', not {self.on_cancel!r}")


@dataclass(frozen=True, slots=True)
class UpsertEvent:
    """Write the booking's Event; `rule` explains the choices for the journal."""

    fields: EventFields
    rule: str


@dataclass(frozen=True, slots=True)
class DeleteEvent:
    """Delete the booking's Event (by the ledger's id, else found by External ID)."""

    reason: str


@dataclass(frozen=True, slots=True)
class NothingToDo:
    """Salesforce already holds the desired state."""

    reason: str


EventAction = UpsertEvent | DeleteEvent | NothingToDo | RuleFailure


class _Refused(Exception):
    """Carries a RuleFailure out of a helper; never escapes this module."""

    def __init__(self, failure: RuleFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _refuse(code: FailureCode, message: str, *, user: str | None = None, link: str | None = None) -> _Refused:
    return _Refused(RuleFailure(code, message, waiting_for_user=user, waiting_for_link=link))


# ------------------------------------------------------------------------------------------ shared checks


def _link_type(link: LinkState) -> LinkType:
    if link.link_type is None:
        raise _refuse(FailureCode.UNKNOWN_LINK_TYPE, f"link {link.link_id} has no link_type")
    try:
        return LinkType(link.link_type)
    except ValueError:
        raise _refuse(
            FailureCode.UNKNOWN_LINK_TYPE,
            f"link {link.link_id} has link_type {label(link.link_type)}; "
            f"known: {', '.join(t.value for t in LinkType)}",
        ) from None


def _title(link: LinkState) -> str:
    if blank(link.title):
        raise _refuse(FailureCode.BAD_VALUE, f"link {link.link_id} has an empty title")
    assert link.title is not None
    return link.title


def _salesforce_user(user_id: str, user: UserState | None, role: str, org: tuple[str, str | None]) -> str:
    """The 18-character User id of a scheduler user, or a refusal that says who must connect.

    `role` says whose user it is, e.g. "link owner of link <id>"; `org` is (what, org_id) of the record the
    user is for, e.g. ("booking", its org_id): a user of another org is refused.
    """
    what, org_id = org
    if user is not None and user.org_id != org_id:
        raise _refuse(
            FailureCode.CROSS_ORG_USER,
            f"the {role} (user {user_id}) belongs to another org than the {what}",
            user=user_id,
        )
    raw = user.salesforce_user_id if user is not None else None
    if raw is None or blank(raw):
        raise _refuse(
            FailureCode.USER_NOT_CONNECTED,
            f"the {role} (user {user_id}) has not connected a Salesforce user",
            user=user_id,
        )
    normalised = normalise_id(raw)
    if normalised is None:
        raise _refuse(
            FailureCode.INVALID_USER_ID, f"salesforce_user_id of the {role} (user {user_id}): {shape(raw)}"
        )
    if sfid.key_prefix(normalised) != sfid.USER_PREFIX:
        raise _refuse(
            FailureCode.INVALID_USER_ID,
            f"salesforce_user_id of the {role} (user {user_id}) is {normalised}, "
            f"not a User id (prefix {sfid.USER_PREFIX})",
        )
    return normalised


def _link_owner(link: LinkState, owner: UserState | None, org: tuple[str, str | None]) -> str:
    if blank(link.owner_user_id):
        raise _refuse(FailureCode.NO_OWNER, f"link {link.link_id} has no owner_id")
    assert link.owner_user_id is not None
    return _salesforce_user(link.owner_user_id, owner, f"link owner of link {link.link_id}", org)


# ------------------------------------------------------------------------------------------ Mogli Event


def mogli_event_for(work: LinkWork) -> MogliEventFields | RuleFailure:
    """The Mogli Event of a link, or why it cannot be written."""
    link = work.link
    try:
        _check_uuid("link", link.link_id)
        if link.source_deleted and link.mogli_event_id is None:
            raise _refuse(
                FailureCode.LINK_DELETED,
                f"link {link.link_id} was deleted in the scheduler before it had a Mogli Event",
            )
        link_type = _link_type(link)
        title = _title(link)
        owner_id = _link_owner(link, work.owner, ("link", link.org_id))
    except _Refused as refused:
        return refused.failure
    return MogliEventFields(
        link_id=link.link_id,
        name=cut(title, NAME_LIMIT, ELLIPSIS),
        link_type=link_type.value,
        description=cut_description(link.description),
        owner_id=owner_id,
    )


# ------------------------------------------------------------------------------------------ Event


def event_action(work: ActivityWork, options: MappingOptions) -> EventAction:
    """What to do with the Event of one booking: upsert it, delete it, nothing, or refuse."""
    booking = work.booking
    if booking.source_deleted:
        return _delete(work, "booking deleted in the scheduler")
    if booking.status == CANCELLED and options.on_cancel == "delete":
        return _delete(work, "booking cancelled (sync.on_cancel=delete)")
    try:
        return _upsert(work, options)
    except _Refused as refused:
        return refused.failure


def _delete(work: ActivityWork, reason: str) -> DeleteEvent | NothingToDo:
    if work.state in _GONE_STATES:
        return NothingToDo(f"{reason}; the Event is already gone (ledger state {work.state})")
    if work.activity_id is None:
        return DeleteEvent(f"{reason}; Event id unknown to the ledger, find it by External ID")
    return DeleteEvent(reason)


def _upsert(work: ActivityWork, options: MappingOptions) -> UpsertEvent:
    """Every check in order (see the module docstring), then the fields and the rule that explains them."""
    booking = work.booking
    _check_booking(booking)
    start_at, end_at = _times(booking, options)
    who_id, who_rule = _who(booking)
    link = _booking_link(work)
    link_type = _link_type(link)
    title = _title(link)
    owner_id, owner_rule = _event_owner(work, link, link_type)
    mogli_event_id = _mogli_event_id(link)
    is_lead = who_id is not None and sfid.key_prefix(who_id) == sfid.LEAD_PREFIX
    cancelled = booking.status == CANCELLED
    subject = cut(options.cancelled_prefix + title if cancelled else title, SUBJECT_LIMIT, ELLIPSIS)
    fields = EventFields(
        booking_id=booking.booking_id,
        owner_id=owner_id,
        who_id=who_id,
        what_id=None if is_lead else mogli_event_id,
        mogli_event_id=mogli_event_id,
        subject=subject,
        description=cut_description(link.description),
        start_at=start_at,
        end_at=end_at,
    )
    return UpsertEvent(fields, _rule(owner_rule, who_rule, is_lead, cancelled, link, fields.description))


def _rule(owner: str, who: str, is_lead: bool, cancelled: bool, link: LinkState, written: str | None) -> str:
    """The journal's one-line account of why the Event looks as it does."""
    parts = [
        owner,
        who,
        "what=empty (Lead WhoId), Mogli Event in Mogli_Event_Id__c" if is_lead else "what=Mogli Event",
    ]
    if cancelled:
        parts.append("subject prefixed (cancelled, sync.on_cancel=keep)")
    if link.description and written != link.description:
        parts.append(f"description cut ({len(link.description):,} characters)")
    if link.is_active is False:
        parts.append("link inactive (booked meetings still sync)")
    return "; ".join(parts)


def _check_uuid(kind: str, value: str) -> None:
    """Scheduler ids are UUIDs; anything else is a broken row (shown by its form, never its content)."""
    if not _UUID.match(value):
        stripped = value.strip()
        raise _refuse(
            FailureCode.BAD_VALUE,
            f"the {kind} id is not a UUID ({len(stripped)} characters); the scheduler's ids are UUIDs",
        )


def _check_booking(booking: BookingState) -> None:
    _check_uuid("booking", booking.booking_id)
    if booking.problems:
        raise _refuse(
            FailureCode.BAD_VALUE,
            f"booking {booking.booking_id} has values that could not be converted: "
            + "; ".join(booking.problems),
        )
    if booking.status not in (SCHEDULED, CANCELLED):
        shown = "no status" if booking.status is None else f"status {label(booking.status)}"
        raise _refuse(
            FailureCode.UNKNOWN_STATUS,
            f"booking {booking.booking_id} has {shown}; known: {SCHEDULED}, {CANCELLED}",
        )


def _times(booking: BookingState, options: MappingOptions) -> tuple[datetime, datetime]:
    """Start and end in UTC, within what Salesforce accepts for a timed Event."""
    start, end = booking.start_at, booking.end_at
    missing = [name for name, value in (("start_at", start), ("end_at", end)) if value is None]
    if missing:
        raise _refuse(
            FailureCode.MISSING_TIMES, f"booking {booking.booking_id} has no {' and '.join(missing)}"
        )
    assert start is not None and end is not None
    naive = [name for name, value in (("start_at", start), ("end_at", end)) if value.utcoffset() is None]
    if naive:
        raise _refuse(
            FailureCode.BAD_VALUE, f"booking {booking.booking_id}: {' and '.join(naive)} without time zone"
        )
    if end < start:
        raise _refuse(
            FailureCode.END_BEFORE_START,
            f"booking {booking.booking_id} ends {_minutes(start - end)} before it starts",
        )
    cap = MULTIDAY_MAX_MINUTES if options.multiday_events else MAX_MINUTES
    if end - start > timedelta(minutes=cap):
        setting = "on" if options.multiday_events else "off"
        raise _refuse(
            FailureCode.TOO_LONG,
            f"booking {booking.booking_id} lasts {_minutes(end - start)}; Salesforce allows at most "
            f"{cap:,} minutes (multiday events {setting})",
        )
    return start.astimezone(UTC), end.astimezone(UTC)


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:,.1f} minutes".replace(".0 ", " ")


def _who(booking: BookingState) -> tuple[str | None, str]:
    """WhoId (Contact or Lead, 18 characters) and the rule that chose it."""
    raw = booking.related_record_id
    if raw is None or blank(raw):
        return None, "who=empty (no related record)"
    record_id = normalise_id(raw)
    if record_id is None:
        raise _refuse(
            FailureCode.INVALID_RELATED_RECORD,
            f"booking {booking.booking_id}: related_record_id has {shape(raw)}",
        )
    prefix = sfid.key_prefix(record_id)
    if prefix == sfid.CONTACT_PREFIX:
        return record_id, "who=Contact"
    if prefix == sfid.LEAD_PREFIX:
        return record_id, "who=Lead"
    name = _OBJECT_NAMES.get(prefix, "another object")
    return None, f"who=empty (related record is {name} {prefix}, not a Contact or Lead)"


def _booking_link(work: ActivityWork) -> LinkState:
    booking, link = work.booking, work.link
    if blank(booking.link_id):
        raise _refuse(FailureCode.LINK_MISSING, f"booking {booking.booking_id} has no link_id")
    if link is None:
        raise _refuse(
            FailureCode.LINK_MISSING,
            f"booking {booking.booking_id} is on link {booking.link_id}, unknown to the ledger",
        )
    if link.link_id != booking.link_id:
        raise _refuse(
            FailureCode.LINK_MISMATCH,
            f"booking {booking.booking_id} is on link {booking.link_id} but was handed link {link.link_id}",
        )
    if link.source_deleted:
        raise _refuse(
            FailureCode.LINK_DELETED,
            f"booking {booking.booking_id} is on link {link.link_id}, deleted in the scheduler",
        )
    return link


def _event_owner(work: ActivityWork, link: LinkState, link_type: LinkType) -> tuple[str, str]:
    """OwnerId (Assigned To) and the rule that chose it."""
    org = ("booking", work.booking.org_id)
    if link_type is not LinkType.ROUND_ROBIN:
        return _link_owner(link, work.owner, org), f"owner=link owner ({link_type.value})"
    assignee = work.booking.assigned_user_id
    if assignee is None or blank(assignee):
        raise _refuse(
            FailureCode.NO_ASSIGNEE, f"round-robin booking {work.booking.booking_id} has no assigned_user_id"
        )
    return _salesforce_user(
        assignee, work.assignee, f"assigned user of booking {work.booking.booking_id}", org
    ), "owner=assigned user (round_robin)"


def _mogli_event_id(link: LinkState) -> str:
    if link.state == "deleted_in_salesforce":
        raise _refuse(
            FailureCode.MOGLI_EVENT_DELETED,
            f"the Mogli Event of link {link.link_id} was deleted in Salesforce; "
            "writing the link again recreates it",
            link=link.link_id,
        )
    if link.mogli_event_id is None:
        if link.state == "failed":
            raise _refuse(
                FailureCode.MOGLI_EVENT_FAILED,
                f"the Mogli Event of link {link.link_id} could not be written; see the link's error",
                link=link.link_id,
            )
        raise _refuse(
            FailureCode.MOGLI_EVENT_PENDING,
            f"the Mogli Event of link {link.link_id} is not written yet",
            link=link.link_id,
        )
    normalised = normalise_id(link.mogli_event_id)
    if normalised is None:
        raise _refuse(
            FailureCode.INVALID_MOGLI_EVENT_ID,
            f"link {link.link_id}: mogli_event_id has {shape(link.mogli_event_id)}",
        )
    return normalised
