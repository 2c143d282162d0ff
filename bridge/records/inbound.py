"""Frozen records of the inbound direction: decoded Salesforce change events, what the ledger knows of the
records they name, and the ledger changes the inbound policy decides on.

They live beside `bridge/records.py` (the outbound records) so that `salesforce/` can decode into them,
`ledger/` can read and write them and `sync/` can reason about them without any adapter importing another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class ChangeType(enum.StrEnum):
    """`ChangeEventHeader.changeType`."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    UNDELETE = "UNDELETE"
    GAP_CREATE = "GAP_CREATE"
    GAP_UPDATE = "GAP_UPDATE"
    GAP_DELETE = "GAP_DELETE"
    GAP_UNDELETE = "GAP_UNDELETE"
    GAP_OVERFLOW = "GAP_OVERFLOW"

    @property
    def is_gap(self) -> bool:
        """True for the GAP_* types other than overflow (header only: the records must be re-read)."""
        return self.value.startswith("GAP_") and self is not ChangeType.GAP_OVERFLOW


class ChangeEntity(enum.StrEnum):
    """The objects the bridge watches."""

    EVENT = "event"
    MOGLI_EVENT = "mogli_event"
    LEAD = "lead"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class SalesforceChange:
    """One decoded change event (or a change synthesised from re-reading a record).

    `present` names the body fields the event carried (CometD UPDATE events carry only the changed ones);
    a value is meaningful only when its field is present. Ids are 18-character.
    """

    channel: str
    replay_id: int | None
    entity: ChangeEntity
    change_type: ChangeType
    record_ids: tuple[str, ...]
    commit_time: datetime
    change_origin: str = ""
    commit_user: str | None = None  # `ChangeEventHeader.commitUser` (None for re-reads: nobody is known)
    present: frozenset[str] = frozenset()
    owner_id: str | None = None
    who_id: str | None = None
    what_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    external_id: str | None = None  # booking id (Event) or link id (Mogli Event)
    is_converted: bool | None = None
    converted_contact_id: str | None = None


class Field(enum.StrEnum):
    """Body fields `present` may name."""

    OWNER = "OwnerId"
    WHO = "WhoId"
    WHAT = "WhatId"
    START = "StartDateTime"
    END = "EndDateTime"
    EXTERNAL_ID = "external_id"
    IS_CONVERTED = "IsConverted"


@dataclass(frozen=True, slots=True)
class KnownActivity:
    """What the ledger knows of one booking's Event: the values it last wrote and the mirror."""

    booking_id: str
    link_id: str | None
    activity_id: str | None
    state: str
    owner_salesforce_id: str | None
    who_id: str | None
    what_id: str | None
    start_at: datetime | None
    end_at: datetime | None
    assigned_user_id: str | None
    related_record_id: str | None
    link_type: str | None = None


@dataclass(frozen=True, slots=True)
class KnownLink:
    """What the ledger knows of one link's Mogli Event."""

    link_id: str
    mogli_event_id: str | None
    state: str
    link_type: str | None


class Cascade(enum.StrEnum):
    """What a link change does to the link's activities."""

    NONE = "none"
    MARK_DELETED = "mark_deleted"  # the Mogli Event took its Events with it
    RESTORE = "restore"  # the Mogli Event came back from the recycle bin with its Events


@dataclass(frozen=True, slots=True)
class ActivityChange:
    """One inbound effect on one `activities` row; None means "leave unchanged".

    `requeue` puts the row back to pending at a new version, so the outbound pipeline writes the scheduler's
    values again. `action` and `detail` become the journal entry.
    """

    booking_id: str
    action: str
    state: str | None = None
    requeue: bool = False
    activity_id: str | None = None
    owner_salesforce_id: str | None = None
    who_id: str | None = None
    what_id: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    related_record_id: str | None = None
    assigned_user_id: str | None = None
    error_code: str | None = None
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LinkChange:
    """One inbound effect on one `links` row (and, through `cascade`, on its activities)."""

    link_id: str
    action: str
    state: str | None = None
    mogli_event_id: str | None = None
    clear_mogli_event_id: bool = False
    cascade: Cascade = Cascade.NONE
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class InboundBatch:
    """Ledger changes of one change event, made durable with the channel's position in one transaction."""

    activities: tuple[ActivityChange, ...] = ()
    links: tuple[LinkChange, ...] = ()
    checkpoint_stream: str | None = None
    checkpoint_position: str | None = None
    notes: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = ()  # (entity, key, action, detail)


@dataclass(frozen=True, slots=True)
class ReplayPosition:
    """A channel's position in the ledger: the last replay id whose effect is committed, and its commit time.

    Stored as checkpoint text `<replayId>;<ISO commit time>` under the channel name as stream.
    """

    replay_id: int
    commit_time: datetime | None = None

    def encode(self) -> str:
        """The checkpoint text."""
        return f"{self.replay_id};{self.commit_time.isoformat() if self.commit_time else ''}"

    @classmethod
    def decode(cls, text: str | None) -> ReplayPosition | None:
        """Parse checkpoint text; None for an empty or unreadable position."""
        if not text:
            return None
        replay, _, when = text.partition(";")
        try:
            return cls(int(replay), datetime.fromisoformat(when) if when else None)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class WindowLost:
    """The stored replay id of a channel is outside the retention window: events after `since` may be lost.

    The stream has resubscribed with -1 (new events only); the consumer reconciles the window by change time.
    Also reported when a channel that never had a replay id is subscribed again after a gap: `since` is then
    the last time the stream was known to have seen everything (a `Heartbeat`).
    """

    channel: str
    since: datetime | None
    reason: str = "replay_window_lost"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A channel without any replay id (nothing delivered yet, e.g. a quiet filtered channel) was live and
    subscribed until `seen_until`: stored as its position `-1;<time>`, so that after a restart or a rebuild
    the window since then is reconciled instead of silently skipped by a -1 subscription."""

    channel: str
    seen_until: datetime
    first: bool = False  # the channel's first report: stored at once, before the next flush


@dataclass(frozen=True, slots=True)
class EventAllocation:
    """The org's delivered change-event allocation (`DailyDeliveredPlatformEvents` in `/limits`): shared by
    every subscriber, counted per subscriber, after channel filters."""

    limit: int
    remaining: int

    @property
    def used(self) -> int:
        """Events delivered in the current 24-hour window."""
        return max(self.limit - self.remaining, 0)
