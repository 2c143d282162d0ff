"""Large batches cost a bounded number of statements: no per-row round trips."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from bridge.ledger.repository import Ledger
from bridge.records.outbound import ActivityOutcome, LinkOutcome, OutcomeState
from bridge.records.source import ChangeOp
from tests.adapters.ledger.factory import FUTURE, NOW, batch, booking, change, link, setup_link, txn, user

ROWS = 10_000


class StatementCounter:
    """Counts statements sent to the database driver (an executemany counts once)."""

    def __init__(self, repo: Ledger) -> None:
        self.count = 0
        self._repo = repo

    def __call__(self, *_args: object) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self._repo.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self._repo.engine, "before_cursor_execute", self)


async def test_ten_thousand_bookings_in_one_batch(repo: Ledger) -> None:
    """10,000 new bookings are stored with far fewer statements than rows, and all are queued."""
    await repo.apply_source_batch(batch(setup_link()))
    bookings = [booking(f"b{i:05d}", start=FUTURE + timedelta(minutes=i)) for i in range(ROWS)]
    transactions = [txn(*bookings[i : i + 100]) for i in range(0, ROWS, 100)]
    with StatementCounter(repo) as counter:
        summary = await repo.apply_source_batch(batch(*transactions))
    assert summary.bookings == ROWS and summary.pending_work
    assert counter.count < 60, counter.count
    assert (await repo.counts())["activities.pending"] == ROWS


async def test_ten_thousand_updates_and_outcomes(repo: Ledger) -> None:
    """Updating 10,000 stored bookings, and recording 10,000 outcomes, also stay bounded."""
    await repo.apply_source_batch(batch(setup_link(), txn(*(booking(f"b{i:05d}") for i in range(ROWS)))))
    await repo.record_link_outcomes([LinkOutcome("l1", 1, OutcomeState.SYNCED, mogli_event_id="a0B")], NOW)
    moved = [
        change(booking(f"b{i:05d}", start=FUTURE + timedelta(hours=1)), ChangeOp.UPDATE) for i in range(ROWS)
    ]
    with StatementCounter(repo) as counter:
        await repo.apply_source_batch(batch(txn(*moved)))
    assert counter.count < 60, counter.count
    work = await repo.claim_activity_work(NOW, ROWS)
    assert len(work) == ROWS and {w.version for w in work} == {2}
    outcomes = [
        ActivityOutcome(w.booking.booking_id, w.version, OutcomeState.SYNCED, activity_id=f"00U{i}")
        for i, w in enumerate(work)
    ]
    with StatementCounter(repo) as counter:
        await repo.record_activity_outcomes(outcomes, NOW)
    assert counter.count < 60, counter.count
    assert (await repo.counts())["activities.synced"] == ROWS


async def test_link_edit_with_many_bookings(repo: Ledger) -> None:
    """A link edit that requeues thousands of future activities does it in bulk."""
    await repo.apply_source_batch(
        batch(txn(user("u1"), link("l1")), txn(*(booking(f"b{i:05d}") for i in range(3000))))
    )
    await repo.record_link_outcomes([LinkOutcome("l1", 1, OutcomeState.SYNCED, mogli_event_id="a0B")], NOW)
    with StatementCounter(repo) as counter:
        await repo.apply_source_batch(batch(txn(change(link("l1", title="Renamed"), ChangeOp.UPDATE))))
    assert counter.count < 30, counter.count
    assert {a.version for a in await repo.list_activities(link_id="l1", limit=None)} == {2}
