"""The push scheduler: batches, calls in flight, links ahead of Events, version checks, holds and stop.

Hand-written fakes of the Ledger and SalesforceWriter ports (bridge/pipeline/ports.py): the ledger keeps rows
with versions and compares them on record as the real one does; Salesforce answers only when the test
releases a call, so every test decides exactly what is in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.errors import PermanentError, SalesforceUnavailable
from bridge.ledger.outbox import LINK_WAITING_CODES
from bridge.pipeline.push import Pusher, PushSettings
from bridge.records.outbound import (
    ActivityOutcome,
    ActivityWork,
    ApiUsage,
    EventFields,
    LinkOutcome,
    LinkWork,
    MogliEventFields,
    OutcomeState,
    WriteResult,
)
from bridge.records.source import BookingState, LinkState, UserState
from bridge.rules.mapping import USER_WAITING_CODES, WAITING_CODES, MappingOptions

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
OWNER = UserState("7f1e0c1a-0000-4000-8000-000000000001", "005Dn000001OwNrIAK")
CONTACT = "003Dn00000CoNtAIAV"
MOGLI = "a01Dn00000MoGlIIAV"
LINK_A = "9a1b2c3d-0000-4000-8000-00000000000a"
LINK_NEW = "9a1b2c3d-0000-4000-8000-00000000000b"
LINK_OLD = "9a1b2c3d-0000-4000-8000-00000000000c"


def bid(n: int) -> str:
    """The id of booking number `n` (the scheduler's ids are UUIDs)."""
    return f"b0000000-0000-4000-8000-{n:012d}"


def link_state(link_id: str, mogli_event_id: str | None) -> LinkState:
    """A one-on-one link owned by OWNER."""
    return LinkState(
        link_id=link_id,
        link_type="one_on_one",
        owner_user_id=OWNER.user_id,
        title="Intro call",
        description="Agenda",
        duration_minutes=30,
        is_active=True,
        source_deleted=False,
        mogli_event_id=mogli_event_id,
        state="synced" if mogli_event_id else "pending",
    )


@dataclass
class Row:
    """A ledger row of the fake: the work it offers, its current version and state."""

    work: Any
    version: int = 1
    state: str = "pending"
    synced_version: int | None = None


@dataclass
class FakeLedger:
    """The outbox as the pipeline sees it: pending rows, claims without locks, version-checked records."""

    links: dict[str, Row] = field(default_factory=dict)
    activities: dict[str, Row] = field(default_factory=dict)
    claims: list[tuple[str, int]] = field(default_factory=list)

    def add_link(self, link_id: str, synced: bool) -> None:
        """A link, already holding its Mogli Event when `synced`."""
        state = link_state(link_id, MOGLI if synced else None)
        row = Row(LinkWork(state, OWNER, 1, 0), state="synced" if synced else "pending")
        row.synced_version = 1 if synced else None
        self.links[link_id] = row

    def add_booking(self, booking_id: str, link_id: str) -> None:
        """A pending booking on a link."""
        booking = BookingState(
            booking_id=booking_id,
            link_id=link_id,
            assigned_user_id=None,
            start_at=NOW + timedelta(days=1),
            end_at=NOW + timedelta(days=1, minutes=30),
            status="scheduled",
            related_record_id=CONTACT,
            source_deleted=False,
        )
        self.activities[booking_id] = Row(ActivityWork(booking, None, OWNER, None, None, "pending", 1, 0))

    def change_booking(self, booking_id: str) -> None:
        """A new source version of a booking (as an ingest would write it)."""
        row = self.activities[booking_id]
        row.version += 1
        row.state = "pending"

    def state(self, booking_id: str) -> str:
        """The booking's sync state."""
        return self.activities[booking_id].state

    async def read_checkpoint(self, stream: str) -> str | None:
        """Unused by the pusher."""
        return None

    async def apply_source_batch(self, batch: Any) -> Any:
        """Unused by the pusher."""
        return None

    async def claim_link_work(self, now: datetime, limit: int) -> list[LinkWork]:
        """Pending links (in-flight ones included, as the real ledger does)."""
        self.claims.append(("links", limit))
        due = [
            dataclasses.replace(r.work, version=r.version)
            for r in self.links.values()
            if r.state == "pending" and r.synced_version != r.version
        ]
        return due[:limit]

    async def claim_activity_work(
        self, now: datetime, limit: int, exclude: Collection[str] = ()
    ) -> list[ActivityWork]:
        """Pending bookings whose link has its Mogli Event, minus `exclude`."""
        self.claims.append(("activities", limit))
        out = []
        for booking_id, r in self.activities.items():
            link = self.links[r.work.booking.link_id]
            if r.state != "pending" or r.synced_version == r.version or booking_id in exclude:
                continue
            if link.work.link.mogli_event_id is None:
                continue
            out.append(dataclasses.replace(r.work, link=link.work.link, version=r.version))
        return out[:limit]

    async def record_link_outcomes(self, outcomes: Sequence[LinkOutcome], now: datetime) -> None:
        """Settle links whose claimed version is still current."""
        for o in outcomes:
            row = self.links[o.link_id]
            if o.state is OutcomeState.SYNCED and row.version == o.version:
                row.state, row.synced_version = "synced", o.version
                row.work = dataclasses.replace(
                    row.work, link=dataclasses.replace(row.work.link, mogli_event_id=o.mogli_event_id)
                )

    async def record_activity_outcomes(self, outcomes: Sequence[ActivityOutcome], now: datetime) -> None:
        """Settle bookings whose claimed version is still current; stale ones stay pending."""
        for o in outcomes:
            row = self.activities[o.booking_id]
            if o.state is not OutcomeState.RETRY and row.version == o.version:
                row.state, row.synced_version = o.state.value, o.version


class FakeSalesforce:
    """Answers a call only when the test releases it; remembers every call and what was in flight."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []
        self.gates: list[asyncio.Event] = []
        self.fail_next: Exception | None = None

    def release_all(self) -> None:
        """Let every waiting call answer (and every later one at once)."""
        for gate in self.gates:
            gate.set()
        self.auto = True

    auto = False

    async def _write(self, kind: str, keys: list[str]) -> list[WriteResult]:
        self.calls.append((kind, keys))
        self.overlaps.extend(k for k in keys if k in self.in_flight)
        self.in_flight |= set(keys)
        gate = asyncio.Event()
        if self.auto:
            gate.set()
        self.gates.append(gate)
        try:
            await gate.wait()
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            return [WriteResult(k, f"00UDn{i:013d}") for i, k in enumerate(keys)]
        finally:
            self.in_flight -= set(keys)

    async def upsert_mogli_events(self, items: Sequence[MogliEventFields]) -> list[WriteResult]:
        """Upsert Mogli Events."""
        results = await self._write("mogli", [i.link_id for i in items])
        return [dataclasses.replace(r, record_id=MOGLI) for r in results]

    async def upsert_events(self, items: Sequence[EventFields]) -> list[WriteResult]:
        """Upsert Events."""
        return await self._write("event", [i.booking_id for i in items])

    async def delete_records(self, ids: Sequence[str]) -> list[WriteResult]:
        """Delete records."""
        return await self._write("delete", list(ids))

    async def find_events_by_booking(self, booking_ids: Sequence[str]) -> dict[str, str]:
        """No Event is known."""
        return {}

    @property
    def usage(self) -> ApiUsage | None:
        """No reading."""
        return None


def make_pusher(ledger: FakeLedger, sf: FakeSalesforce, **settings: Any) -> Pusher:
    """A pusher with the fakes and a fixed clock."""
    return Pusher(
        ledger,
        sf,
        options=MappingOptions(),
        settings=PushSettings(**{"batch_size": 200, "max_in_flight": 4, **settings}),
        clock=lambda: NOW,
    )


def bookings(ledger: FakeLedger, count: int, link_id: str = LINK_A, start: int = 0) -> list[str]:
    """`count` pending bookings on `link_id`."""
    ids = [bid(start + i) for i in range(count)]
    for booking_id in ids:
        ledger.add_booking(booking_id, link_id)
    return ids


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_backlog_fills_every_slot_with_full_disjoint_batches() -> None:
    """1,000 pending bookings: four full calls start at once, no booking twice; all settle in five calls."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    ids = bookings(ledger, 1000)
    pusher = make_pusher(ledger, sf)

    assert await pusher.dispatch() == 4
    await settle()
    assert pusher.in_flight == 4
    assert [len(keys) for _, keys in sf.calls] == [200, 200, 200, 200]
    assert len({k for _, keys in sf.calls for k in keys}) == 800
    sf.release_all()
    while any(ledger.state(b) == "pending" for b in ids):
        await pusher.push_once()
    assert sf.overlaps == []
    assert len(sf.calls) == 5
    assert {ledger.state(b) for b in ids} == {"synced"}


async def test_low_load_sends_at_once_and_batches_what_queued_meanwhile() -> None:
    """One booking goes out alone at once; three arriving during that call wait for it, then share a call."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 1)
    pusher = make_pusher(ledger, sf, max_partial_in_flight=1)

    assert await pusher.dispatch() == 1
    await settle()
    bookings(ledger, 3, start=1)
    pusher.notify()  # as the ingestor does
    assert await pusher.dispatch() == 0  # a part-filled batch is in flight: no second one
    sf.gates[0].set()
    await settle()
    assert pusher.in_flight == 0
    assert await pusher.dispatch() == 1
    await settle()
    assert [keys for _, keys in sf.calls] == [[bid(0)], [bid(1), bid(2), bid(3)]]


async def test_part_filled_calls_are_capped_per_kind() -> None:
    """With two part-filled calls allowed, a third trickle of bookings waits; a new link's Mogli Event
    (the other kind) still goes out."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    pusher = make_pusher(ledger, sf, max_partial_in_flight=2)

    for start in (0, 1, 2):
        bookings(ledger, 1, start=start)
        pusher.notify()
        await pusher.dispatch()
    ledger.add_link(LINK_NEW, synced=False)
    pusher.notify()
    await pusher.dispatch()
    await settle()
    assert sf.calls == [("event", [bid(0)]), ("event", [bid(1)]), ("mogli", [LINK_NEW])]
    sf.release_all()
    await settle()
    assert await pusher.push_once()
    assert sf.calls[-1] == ("event", [bid(2)])


async def test_a_full_batch_may_join_a_part_filled_call() -> None:
    """While a part-filled call is in flight, a full batch still gets its own slot."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 1)
    pusher = make_pusher(ledger, sf, batch_size=10, max_partial_in_flight=1)

    assert await pusher.dispatch() == 1
    bookings(ledger, 25, start=1)
    pusher.notify()
    assert await pusher.dispatch() == 2  # two full batches of 10; the 5 left wait for the part-filled call
    await settle()
    assert [len(keys) for _, keys in sf.calls] == [1, 10, 10]


async def test_an_org_with_nothing_more_to_do_asks_the_ledger_nothing_when_a_call_lands() -> None:
    """A claim that took every pending row leaves nothing for the next: when the call lands, the pusher
    claims again only if work was ingested meanwhile (each claim is a turn of the ledger's shared thread)."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 1)
    pusher = make_pusher(ledger, sf)

    assert await pusher.dispatch() == 1
    asked = len(ledger.claims)
    sf.release_all()
    await settle()
    assert pusher.in_flight == 0 and ledger.state(bid(0)) == "synced"
    assert await pusher.dispatch() == 0
    assert len(ledger.claims) == asked  # nothing was asked
    bookings(ledger, 2, start=1)
    pusher.notify()
    assert await pusher.dispatch() == 1
    assert len(ledger.claims) > asked


async def test_a_written_mogli_event_lets_its_events_be_claimed_without_a_notify() -> None:
    """Events wait for their link's Mogli Event; once it is recorded they are claimed at once."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_NEW, synced=False)
    new = bookings(ledger, 2, link_id=LINK_NEW)
    pusher = make_pusher(ledger, sf)

    assert await pusher.dispatch() == 1
    sf.release_all()
    await settle()
    assert await pusher.dispatch() == 1
    await settle()
    assert sf.calls[-1] == ("event", new)


async def test_mogli_events_go_first_without_holding_back_synced_links() -> None:
    """A link without its Mogli Event is written first; bookings of a synced link go out beside it,
    and the new link's bookings follow once its Mogli Event is recorded."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_NEW, synced=False)
    ledger.add_link(LINK_OLD, synced=True)
    new = bookings(ledger, 2, link_id=LINK_NEW)
    old = bookings(ledger, 2, link_id=LINK_OLD, start=100)
    pusher = make_pusher(ledger, sf)

    assert await pusher.dispatch() == 2
    await settle()
    assert sf.calls == [("mogli", [LINK_NEW]), ("event", old)]
    sf.release_all()
    await pusher.push_once()
    await pusher.push_once()
    assert sf.calls[-1] == ("event", new)
    assert {ledger.state(b) for b in new + old} == {"synced"}


async def test_a_booking_changed_during_its_call_is_pushed_again() -> None:
    """The outcome carries the claimed version: a change during the call leaves the row pending, and the
    next round writes the new version."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 1)
    pusher = make_pusher(ledger, sf)

    await pusher.dispatch()
    await settle()
    ledger.change_booking(bid(0))
    assert await pusher.dispatch() == 0  # in flight: excluded from claims
    sf.release_all()
    await settle()
    assert ledger.state(bid(0)) == "pending"
    assert await pusher.push_once()
    assert ledger.state(bid(0)) == "synced"
    assert ledger.activities[bid(0)].synced_version == 2
    assert sf.overlaps == []


async def test_salesforce_unavailable_holds_new_calls_and_keeps_rows_pending() -> None:
    """A call that fails as unavailable records nothing, frees its rows and starts no call for a while."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 3)
    pusher = make_pusher(ledger, sf, retry_base_seconds=60.0)
    sf.fail_next = SalesforceUnavailable("PATCH /composite/sobjects: ServerDisconnectedError")

    sf.release_all()
    await pusher.push_once()
    assert pusher.waiting_reason == "salesforce_unavailable"
    assert {ledger.state(b) for b in (bid(0), bid(1), bid(2))} == {"pending"}
    assert await pusher.dispatch() == 0
    assert len(sf.calls) == 1


async def test_an_unexpected_error_reaches_the_supervisor() -> None:
    """An error that is neither transient nor an API limit ends run() with that error."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 1)
    pusher = make_pusher(ledger, sf)
    sf.fail_next = PermanentError("INVALID_TYPE: sObject type 'Event' is not supported", code="INVALID_TYPE")
    sf.release_all()

    with pytest.raises(PermanentError):
        await asyncio.wait_for(pusher.run(asyncio.Event()), timeout=10)


async def test_stop_finishes_the_calls_in_flight() -> None:
    """run() returns after stop only once the call in flight has answered and its outcome is recorded."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    bookings(ledger, 2)
    pusher = make_pusher(ledger, sf)
    stop = asyncio.Event()

    runner = asyncio.create_task(pusher.run(stop))
    await settle()
    assert len(sf.calls) == 1
    stop.set()
    await settle()
    assert not runner.done()
    sf.release_all()
    await asyncio.wait_for(runner, timeout=10)
    assert {ledger.state(bid(0)), ledger.state(bid(1))} == {"synced"}


def test_the_ledger_releases_exactly_the_bookings_that_wait_for_a_link() -> None:
    """The codes the ledger releases when a link's Mogli Event is written are the rules' waiting codes that
    wait for a link (the rest, USER_WAITING_CODES, clear when the user's row changes)."""
    waiting_for_link = {c.value for c in WAITING_CODES - USER_WAITING_CODES}
    assert set(LINK_WAITING_CODES) == waiting_for_link


async def _idle_claims(ledger: FakeLedger, sf: FakeSalesforce, seconds: float, **settings: Any) -> int:
    """Link claims of a pusher with nothing to do, run for `seconds`."""
    pusher = make_pusher(ledger, sf, **settings)
    stop = asyncio.Event()
    task = asyncio.ensure_future(pusher.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return sum(kind == "links" for kind, _ in ledger.claims)


async def test_an_idle_pusher_with_a_ceiling_polls_less_and_less() -> None:
    """Nothing to do: a constant idle poll claims every interval; with `idle_poll_max_seconds` each empty
    poll doubles the next up to the ceiling (0.01, 0.02, 0.04, 0.08, 0.08 ... s)."""
    constant = await _idle_claims(FakeLedger(), FakeSalesforce(), 0.5, idle_poll_seconds=0.01)
    backing_off = await _idle_claims(
        FakeLedger(), FakeSalesforce(), 0.5, idle_poll_seconds=0.01, idle_poll_max_seconds=0.08
    )
    assert constant >= 20
    assert 3 <= backing_off <= 12, backing_off


async def test_new_work_resets_the_idle_poll() -> None:
    """After the idle poll has grown to seconds, a notified booking is claimed at once."""
    ledger, sf = FakeLedger(), FakeSalesforce()
    ledger.add_link(LINK_A, synced=True)
    pusher = make_pusher(ledger, sf, idle_poll_seconds=0.01, idle_poll_max_seconds=10.0)
    stop = asyncio.Event()
    task = asyncio.ensure_future(pusher.run(stop))
    await asyncio.sleep(0.3)  # 0.01 + 0.02 + ... : the next poll is seconds away
    claimed = len(ledger.claims)
    bookings(ledger, 1)
    pusher.notify()
    await asyncio.sleep(0.05)
    assert len(ledger.claims) > claimed  # claimed at once, not at the grown poll
    sf.release_all()
    stop.set()
    await task
