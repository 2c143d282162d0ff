"""Hand-written fakes of the scheduler and Salesforce reads that reconciliation drives (real-ledger tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bridge.pipeline.ports import BookingKey
from bridge.records.source import BookingRow, LinkRow, UserRow
from bridge.rules.drift import EventSnapshot, MogliSnapshot


@dataclass
class FakeScheduler:
    """The scheduler's rows in memory; `on_bookings_read(n)` runs after the n-th bookings() read."""

    user_rows: dict[str, UserRow] = field(default_factory=dict)
    link_rows: dict[str, LinkRow] = field(default_factory=dict)
    booking_rows: dict[str, BookingRow] = field(default_factory=dict)
    on_bookings_read: Callable[[int], None] | None = None
    bookings_reads: int = 0

    async def booking_ids(
        self, links: Sequence[str], bookings: Sequence[str], since: datetime | None, until: datetime | None
    ) -> list[BookingKey]:
        """Bookings in scope (the start window on start_at)."""
        keys = []
        for b in self.booking_rows.values():
            if (links and b.link_id not in links) or (bookings and b.id not in bookings):
                continue
            start = b.start_at
            if start is not None and ((since and start < since) or (until and start >= until)):
                continue
            keys.append((b.id, b.link_id, b.assigned_user_id))
        return sorted(keys, key=lambda k: k[0])

    async def link_ids(self) -> list[str]:
        """Every link id."""
        return sorted(self.link_rows)

    async def user_ids(self) -> list[str]:
        """Every user id."""
        return sorted(self.user_rows)

    async def bookings(self, ids: Sequence[str]) -> dict[str, BookingRow]:
        """Bookings by id; then the interleaving hook, if any."""
        found = {k: self.booking_rows[k] for k in ids if k in self.booking_rows}
        self.bookings_reads += 1
        if self.on_bookings_read is not None:
            self.on_bookings_read(self.bookings_reads)
        return found

    async def links(self, ids: Sequence[str]) -> dict[str, LinkRow]:
        """Links by id."""
        return {k: self.link_rows[k] for k in ids if k in self.link_rows}

    async def users(self, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users by id."""
        return {k: self.user_rows[k] for k in ids if k in self.user_rows}


@dataclass
class FakeSalesforce:
    """Events and Mogli Events in memory (deleted ones too); every write is recorded."""

    events: list[EventSnapshot] = field(default_factory=list)
    moglis: list[MogliSnapshot] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    changed_events: set[str] = field(default_factory=set)  # booking keys of Events changed in any window
    changed_moglis: set[str] = field(default_factory=set)
    windows: list[tuple[datetime, datetime | None]] = field(default_factory=list)

    async def events_by_booking(self, booking_ids: Sequence[str]) -> list[EventSnapshot]:
        """Events by booking External ID."""
        return [e for e in self.events if e.booking_id in booking_ids]

    async def mogli_events_by_link(self, link_ids: Sequence[str]) -> list[MogliSnapshot]:
        """Mogli Events by link External ID."""
        return [m for m in self.moglis if m.link_id in link_ids]

    async def booking_keys(self, since: datetime | None, until: datetime | None) -> set[str]:
        """Booking External IDs of live Events."""
        return {e.booking_id for e in self.events if e.booking_id and not e.deleted}

    async def booking_keys_of_links(self, mogli_event_ids: Sequence[str]) -> set[str]:
        """Booking External IDs of live Events on these Mogli Events."""
        return {
            e.booking_id
            for e in self.events
            if e.booking_id and not e.deleted and e.mogli_event_id in mogli_event_ids
        }

    async def link_keys(self) -> set[str]:
        """Link External IDs of live Mogli Events."""
        return {m.link_id for m in self.moglis if m.link_id and not m.deleted}

    async def changed_keys(self, since: datetime, until: datetime | None) -> tuple[set[str], set[str]]:
        """The keys set as changed; the window asked for is recorded."""
        self.windows.append((since, until))
        return set(self.changed_events), set(self.changed_moglis)

    async def delete(self, ids: Sequence[str]) -> set[str]:
        """Record the deletes."""
        self.deleted += list(ids)
        return set(ids)
