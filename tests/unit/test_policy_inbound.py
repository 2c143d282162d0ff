"""The inbound component carries out policy decisions in the right order (hand-written fakes of its ports)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from bridge.errors import LedgerUnavailable
from bridge.pipeline.inbound import Inbound, InboundSettings
from bridge.records.inbound import (
    ChangeEntity,
    ChangeType,
    Field,
    InboundBatch,
    KnownActivity,
    KnownLink,
    SalesforceChange,
    WindowLost,
)
from bridge.rules.policy import PolicyOptions

T0 = datetime(2030, 6, 12, 15, 0, tzinfo=UTC)
EVENT_ID = "00U000000000001AAA"
CHANNEL = "/data/EventChangeEvent"
ACTIVITY = KnownActivity(
    "b1",
    "l1",
    EVENT_ID,
    "synced",
    "005000000000001AAA",
    "00Q000000000001AAA",
    None,
    T0,
    T0 + timedelta(minutes=30),
    None,
    "00Q000000000001AAA",
    "one_on_one",
)
FAST = InboundSettings(sweep_seconds=0.01, flush_every=1000, retry_base_seconds=0.001, retry_max_seconds=0.01)


@dataclass
class Feed:
    """A change feed that yields its items, then waits forever."""

    items: list[SalesforceChange | WindowLost]
    committed_ids: list[int] = field(default_factory=list)

    async def changes(self) -> AsyncIterator[SalesforceChange | WindowLost]:
        """The items, then nothing."""
        for item in self.items:
            yield item
        await asyncio.Event().wait()

    def committed(self, channel: str, replay_id: int) -> None:
        """Record the position."""
        self.committed_ids.append(replay_id)


@dataclass
class Ledger:
    """An in-memory ledger that knows one activity and can fail its first writes."""

    log: list[str]
    failures: int = 0
    batches: list[InboundBatch] = field(default_factory=list)

    async def find_inbound_activities(
        self, salesforce_ids: Collection[str], booking_ids: Collection[str] = ()
    ) -> list[KnownActivity]:
        """The one activity when named."""
        return [ACTIVITY] if EVENT_ID in salesforce_ids else []

    async def activities_of_people(self, who_ids: Collection[str]) -> list[KnownActivity]:
        """The one activity when its WhoId is named."""
        return [ACTIVITY] if ACTIVITY.who_id in who_ids else []

    async def find_inbound_links(
        self, salesforce_ids: Collection[str], link_ids: Collection[str] = ()
    ) -> list[KnownLink]:
        """No links."""
        return []

    async def user_for_salesforce_id(self, salesforce_user_id: str) -> str | None:
        """No users."""
        return None

    async def apply_inbound(self, batch: InboundBatch) -> None:
        """Fail while failures remain, else record."""
        if self.failures:
            self.failures -= 1
            raise LedgerUnavailable("ledger away")
        self.log.append("ledger")
        self.batches.append(batch)

    async def recreate_deleted_links(self) -> list[str]:
        """Nothing to recreate."""
        return []

    async def has_deleted_links(self) -> bool:
        """No link waits."""
        return False


@dataclass
class Writer:
    """Records write-backs in the shared log."""

    log: list[str]

    async def set_times(self, booking_id: str, start_at: datetime, end_at: datetime) -> bool:
        """Record a move."""
        self.log.append("writeback")
        return True

    async def set_related_record(self, booking_id: str, related_record_id: str) -> bool:
        """Record a re-point."""
        self.log.append("writeback")
        return True

    async def set_assigned_user(self, booking_id: str, user_id: str) -> bool:
        """Record a reassignment."""
        self.log.append("writeback")
        return True


class Reader:
    """Re-reads that find the Event re-pointed to a Contact."""

    async def read_events(self, ids: Sequence[str], commit_time: datetime) -> list[SalesforceChange]:
        """The Event now naming the Contact."""
        return [
            SalesforceChange(
                "reread",
                None,
                ChangeEntity.EVENT,
                ChangeType.UNDELETE,
                (i,),
                commit_time,
                present=frozenset({Field.WHO}),
                who_id="003000000000001AAA",
            )
            for i in ids
        ]

    async def read_mogli_events(self, ids: Sequence[str], commit_time: datetime) -> list[SalesforceChange]:
        """Nothing."""
        return []


def change(
    replay_id: int, change_type: ChangeType = ChangeType.UPDATE, origin: str = "", **values: object
) -> SalesforceChange:
    """An Event change on the known Event."""
    present = frozenset({Field.START} if "start_at" in values else set())
    return SalesforceChange(
        CHANNEL,
        replay_id,
        ChangeEntity.EVENT,
        change_type,
        (EVENT_ID,),
        T0,
        change_origin=origin,
        present=present,
        **values,
    )  # type: ignore[arg-type]


async def run(
    feed: Feed, ledger: Ledger, log: list[str], options: PolicyOptions = PolicyOptions(), **kw: object
) -> Inbound:
    """Run the component until every fed item is handled, then stop it."""
    inbound = Inbound(feed, ledger, Reader(), Writer(log), options, on_work=lambda: None, settings=FAST, **kw)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.ensure_future(inbound.run(stop))
    async with asyncio.timeout(10):
        while True:
            if inbound.applied + sum(inbound.ignored.values()) >= len(feed.items):
                break
            await asyncio.sleep(0.005)
    stop.set()
    await task
    return inbound


async def test_echoes_write_only_their_position_at_the_end() -> None:
    """Changes carrying our client name are counted, write nothing, and their position is stored once."""
    log: list[str] = []
    feed = Feed([change(n, origin="com/salesforce/api/rest/60.0;client=mogli-bridge") for n in (1, 2, 3)])
    ledger = Ledger(log)
    inbound = await run(feed, ledger, log)
    assert inbound.ignored["echo"] == 3 and inbound.applied == 0
    assert [(b.checkpoint_stream, b.checkpoint_position, b.activities) for b in ledger.batches] == [
        (CHANNEL, "3;" + T0.isoformat(), ())
    ]


async def test_a_transient_ledger_failure_retries_the_same_change() -> None:
    """The change is decided again and committed once; its position moves only after the commit."""
    log: list[str] = []
    feed = Feed([change(7, ChangeType.DELETE)])
    ledger = Ledger(log, failures=2)
    inbound = await run(feed, ledger, log)
    assert inbound.applied == 1 and feed.committed_ids == [7]
    (batch,) = ledger.batches
    assert [a.action for a in batch.activities] == ["salesforce.event_deleted"]
    assert batch.checkpoint_position == "7;" + T0.isoformat()


async def test_write_back_happens_before_the_ledger_commit() -> None:
    """After a crash between the two, the replayed change repeats the write-back (reversed, it is lost)."""
    log: list[str] = []
    options = replace(PolicyOptions(), on_time_changed="write_back")
    await run(Feed([change(9, start_at=T0 + timedelta(minutes=10))]), Ledger(log), log, options)
    assert log == ["writeback", "ledger"]


async def test_converted_lead_re_reads_its_events() -> None:
    """A Lead UPDATE with IsConverted re-reads the Events written for that Lead and applies what changed."""
    log: list[str] = []
    lead = SalesforceChange(
        "/data/LeadChangeEvent",
        4,
        ChangeEntity.LEAD,
        ChangeType.UPDATE,
        ("00Q000000000001AAA",),
        T0,
        present=frozenset({Field.IS_CONVERTED}),
        is_converted=True,
    )
    ledger = Ledger(log)
    await run(Feed([lead]), ledger, log)
    (batch,) = ledger.batches
    assert [a.who_id for a in batch.activities] == ["003000000000001AAA"]
    assert [n[2] for n in batch.notes] == ["salesforce.reread", "writeback.related_record"]
    assert log == ["writeback", "ledger"]


async def test_overflow_without_a_reconciler_asks_for_one_in_the_journal() -> None:
    """GAP_OVERFLOW without a reconciler records `reconcile_needed`; with one, it is called with the time."""
    log: list[str] = []
    overflow = SalesforceChange(CHANNEL, 5, ChangeEntity.EVENT, ChangeType.GAP_OVERFLOW, (), T0)
    ledger = Ledger(log)
    await run(Feed([overflow]), ledger, log)
    assert [n[2] for n in ledger.batches[0].notes] == ["reconcile_needed"]

    calls: list[datetime] = []

    async def reconcile(since: datetime, reason: str) -> None:
        calls.append(since)

    ledger = Ledger(log)
    await run(Feed([overflow]), ledger, log, reconcile=reconcile)
    assert calls == [T0] and [n[2] for n in ledger.batches[0].notes] == ["reconcile_requested"]
