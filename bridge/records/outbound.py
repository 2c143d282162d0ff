"""Frozen records of the outbound direction: the desired Salesforce state the rules produce, the write
commands and their outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from bridge.errors import ErrorKind
from bridge.records.source import BookingState, LinkState, UserState

# --------------------------------------------------------------------------------------------------
# Desired Salesforce state, produced by the rules and written by the Salesforce adapter.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MogliEventFields:
    """The Mogli Event of one link. `link_id` is the External ID value."""

    link_id: str
    name: str
    link_type: str
    description: str | None
    owner_id: str


@dataclass(frozen=True, slots=True)
class EventFields:
    """The Salesforce Event (Activity) of one booking. `booking_id` is the External ID value.

    `what_id` is None for Lead bookings (Salesforce forbids WhatId with a Lead WhoId); `mogli_event_id`
    is always the link's Mogli Event and goes to the Event's Mogli Event Id field.
    """

    booking_id: str
    owner_id: str
    who_id: str | None
    what_id: str | None
    mogli_event_id: str
    subject: str
    description: str | None
    start_at: datetime
    end_at: datetime


@dataclass(frozen=True, slots=True)
class RecordError:
    """One Salesforce error on one record (or a whole call), already classified."""

    code: str
    message: str
    kind: ErrorKind
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of writing one record. `key` is the External ID value (or record id for deletes)."""

    key: str
    record_id: str | None
    created: bool | None = None
    error: RecordError | None = None

    @property
    def ok(self) -> bool:
        """True when Salesforce accepted the write."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class ApiUsage:
    """The org's daily API allocation as last reported by `Sforce-Limit-Info`."""

    used: int
    limit: int

    @property
    def remaining(self) -> int:
        """Calls left in the rolling 24-hour window."""
        return max(self.limit - self.used, 0)


# --------------------------------------------------------------------------------------------------
# Outbox work and outcomes.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkWork:
    """A link whose Mogli Event must be written. `version` is compared when the outcome is recorded."""

    link: LinkState
    owner: UserState | None
    version: int
    attempts: int


@dataclass(frozen=True, slots=True)
class ActivityWork:
    """A booking whose Event must be written or deleted."""

    booking: BookingState
    link: LinkState | None
    owner: UserState | None  # the link owner
    assignee: UserState | None  # the booking's assigned user (round robin)
    activity_id: str | None  # the Event id when one is known
    state: str
    version: int
    attempts: int


class OutcomeState(enum.StrEnum):
    """Where a row ends after a push attempt."""

    SYNCED = "synced"
    FAILED = "failed"
    RETRY = "retry"  # stays pending, tried again at `retry_at`
    CANCELLED = "cancelled"  # the Event was deleted because the booking was cancelled or deleted


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    """What happened when a Mogli Event was written."""

    link_id: str
    version: int
    state: OutcomeState
    mogli_event_id: str | None = None
    owner_salesforce_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class ActivityOutcome:
    """What happened when an Event was written or deleted."""

    booking_id: str
    version: int
    state: OutcomeState
    activity_id: str | None = None
    fields: EventFields | None = None
    error_code: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    rule: str | None = None
    detail: tuple[tuple[str, str], ...] = field(default=())
