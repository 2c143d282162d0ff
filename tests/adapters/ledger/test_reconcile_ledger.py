"""Reconciliation's repairs on a real ledger (SQLite and PostgreSQL), with hand-written scheduler and
Salesforce fakes: a re-mirror never overwrites a newer ingested version, a Mogli Event deleted in Salesforce
is recreated with the link's future Events, and a dry run writes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from bridge import sfid
from bridge.ledger import ingest
from bridge.ledger.repository import Ledger
from bridge.pipeline.reconcile import ReconcileOptions, Reconciler, ReconcileSummary
from bridge.records.source import ChangeOp
from bridge.rules.drift import EventSnapshot, MogliSnapshot, RepairPolicy
from bridge.rules.mapping import MappingOptions
from tests.adapters.ledger.factory import (
    BIG,
    FUTURE,
    NOW,
    OWNER_SF,
    PAST,
    batch,
    booking,
    change,
    link,
    setup_link,
    txn,
    user,
)
from tests.adapters.ledger.reconcile_fakes import FakeSalesforce, FakeScheduler

MOGLI = sfid.to18("a0X000000000001")
CREATED = "2026-11-01T00:00:00.000+0000"
LINK_ID = "10000000-0000-4000-8000-00000000000a"
B_OLD, B_EDITED, B_INGESTED, B_ORPHAN = (f"b0000000-0000-4000-8000-00000000000{n}" for n in range(1, 5))


def _scheduler(*bookings: Any) -> FakeScheduler:
    """The scheduler holding user u1, link l1 and these bookings."""
    return FakeScheduler(
        user_rows={"u1": user("u1")},
        link_rows={"l1": link("l1", "u1")},
        booking_rows={b.id: b for b in bookings},
    )


async def _reconcile(
    repo: Ledger,
    scheduler: FakeScheduler,
    salesforce: FakeSalesforce,
    *,
    dry_run: bool = False,
    policy: RepairPolicy = RepairPolicy(),
    options: ReconcileOptions | None = None,
) -> ReconcileSummary:
    """One reconciliation run (full unless `options` say otherwise) on the repository's ledger."""
    reconciler = Reconciler(
        ledger=repo,
        store=repo,
        scheduler=scheduler,
        salesforce=salesforce,
        options=MappingOptions(),
        policy=policy,
    )
    options = options or ReconcileOptions(dry_run=dry_run)
    return await reconciler.execute(await reconciler.start(options), options)


def _rows(repo: Ledger, table: str) -> list[dict[str, Any]]:
    """Every row of a ledger table, in key order."""
    with repo.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1")).mappings()]


async def test_a_remirror_never_overwrites_a_reschedule_ingested_meanwhile(repo: Ledger) -> None:
    """Defect 5: the stream ingests a reschedule between the re-mirror's scheduler read and its apply; the
    ledger keeps the newer times (and their LSN), queued for the pusher, and the finding is not 'repaired'."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=BIG + 100)))
    stale = booking("b1", start=FUTURE + timedelta(hours=1))
    newer = booking("b1", start=FUTURE + timedelta(hours=2))
    scheduler = _scheduler(stale)

    def reschedule_streams_in(read: int) -> None:
        if read == 2:  # the re-mirror's read: the scheduler has moved on and the ingestor applies it
            # A synchronous hook: the ingest runs here and now, through the repository's synchronous entry.
            repo.call(ingest.apply_batch, batch(txn(change(newer, ChangeOp.UPDATE), lsn=BIG + 200)))

    scheduler.on_bookings_read = reschedule_streams_in
    summary = await _reconcile(repo, scheduler, FakeSalesforce())

    assert scheduler.bookings_reads == 2, "the hook ran between the re-mirror's read and its apply"
    activity = await repo.get_activity("b1")
    assert activity is not None
    assert activity.start_at == newer.start_at and activity.source_lsn == BIG + 200
    assert activity.state == "pending"
    assert summary.counts == {"ledger_booking_stale": 1} and summary.repaired == 0
    [item] = await repo.list_drift(run_id=summary.run_id)
    assert item.booking_id == "b1" and not item.repaired


async def test_a_remirror_with_nothing_streamed_meanwhile_applies_the_scheduler_row(
    repo: Ledger,
) -> None:
    """Without an interleaved ingest the stale mirror takes the scheduler's row and is queued at a new
    version; the source checkpoint does not move."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=BIG + 100)))
    before = await repo.get_activity("b1")
    assert before is not None
    moved = booking("b1", start=FUTURE + timedelta(hours=1))
    summary = await _reconcile(repo, _scheduler(moved), FakeSalesforce())
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.start_at == moved.start_at
    assert activity.state == "pending" and activity.version == before.version + 1
    assert summary.repaired == 1 and await repo.read_checkpoint("source") == str(BIG + 100)


async def _synced_then_mogli_deleted(repo: Ledger) -> None:
    """Link l1 with a past (b0) and a future (b1) booking, synced; then what the inbound path leaves when a
    person deletes the Mogli Event: link and both activities `deleted_in_salesforce`, the link's id
    cleared."""
    await repo.apply_source_batch(
        batch(setup_link(), txn(booking("b0", start=PAST), booking("b1", start=FUTURE), lsn=BIG + 100))
    )
    with repo.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE links SET state = 'deleted_in_salesforce', error_code = 'MOGLI_EVENT_DELETED', "
                "mogli_event_id = NULL, synced_version = version, owner_salesforce_id = :owner"
            ),
            {"owner": OWNER_SF},
        )
        conn.execute(
            sa.text(
                "UPDATE activities SET state = 'deleted_in_salesforce', error_code = 'MOGLI_EVENT_DELETED', "
                "synced_version = version, what_id = :mogli, activity_id = '00U00000000000' || booking_id"
            ),
            {"mogli": MOGLI},
        )


def _deleted_in_salesforce() -> FakeSalesforce:
    """The recycle bin: the Mogli Event and its cascaded Events."""
    mogli = MogliSnapshot(MOGLI, "l1", True, CREATED, "Intro call", OWNER_SF, "one_on_one", "Say hello")
    events = [
        EventSnapshot(
            f"00U00000000000{b}",
            b,
            True,
            CREATED,
            OWNER_SF,
            None,
            MOGLI,
            MOGLI,
            "Intro call",
            None,
            None,
            None,
        )
        for b in ("b0", "b1")
    ]
    return FakeSalesforce(events=events, moglis=[mogli])


async def test_a_mogli_event_deleted_in_salesforce_is_recreated_with_the_links_future_events(
    repo: Ledger,
) -> None:
    """Defect 11: under the default policy `recreate` reconciliation queues the link (forgetting the deleted
    id) and its future Event; the past meeting's Event stays deleted. A second run finds it in flight."""
    await _synced_then_mogli_deleted(repo)
    scheduler = _scheduler(booking("b0", start=PAST), booking("b1", start=FUTURE))
    summary = await _reconcile(repo, scheduler, _deleted_in_salesforce())
    assert summary.counts == {"ledger_points_at_deleted": 1} and summary.repaired == 1
    [item] = await repo.list_drift(run_id=summary.run_id)
    assert item.link_id == "l1" and item.salesforce_id == MOGLI and item.detail["repair"] == "relink"
    linked = await repo.get_link("l1")
    assert linked is not None
    assert (linked.state, linked.mogli_event_id, linked.error_code) == ("pending", None, None)
    future, past = await repo.get_activity("b1"), await repo.get_activity("b0")
    assert future is not None and past is not None
    assert (future.state, future.error_code) == ("pending", None)
    assert past.state == "deleted_in_salesforce"
    again = await _reconcile(repo, scheduler, _deleted_in_salesforce(), dry_run=True)
    assert again.total == 0


async def test_keep_deleted_leaves_a_deleted_mogli_event_deleted(repo: Ledger) -> None:
    """Under `keep_deleted` the link the inbound path marked deleted is no drift and nothing is queued."""
    await _synced_then_mogli_deleted(repo)
    scheduler = _scheduler(booking("b0", start=PAST), booking("b1", start=FUTURE))
    policy = RepairPolicy(on_mogli_event_deleted="keep_deleted")
    summary = await _reconcile(repo, scheduler, _deleted_in_salesforce(), policy=policy)
    assert summary.total == 0
    linked = await repo.get_link("l1")
    assert linked is not None and linked.state == "deleted_in_salesforce"


async def test_a_dry_run_writes_neither_salesforce_nor_the_ledgers_rows(repo: Ledger) -> None:
    """A dry run over every kind of repair (delete an orphan, re-mirror, relink) reports them and changes no
    link, activity, user, journal entry or checkpoint, and deletes nothing in Salesforce."""
    await _synced_then_mogli_deleted(repo)
    orphan = EventSnapshot(
        sfid.to18("00U000000000009"),
        "b-orphan",
        False,
        CREATED,
        OWNER_SF,
        None,
        None,
        None,
        "x",
        None,
        None,
        None,
    )
    salesforce = _deleted_in_salesforce()
    salesforce.events.append(orphan)
    scheduler = _scheduler(booking("b0", start=PAST), booking("b1", start=FUTURE + timedelta(hours=1)))
    tables = ("links", "activities", "users", "journal", "checkpoints")
    before = {t: _rows(repo, t) for t in tables}
    summary = await _reconcile(repo, scheduler, salesforce, dry_run=True)
    assert summary.counts == {
        "ledger_points_at_deleted": 1,
        "orphan_event": 1,
        "ledger_booking_stale": 1,
    }
    assert summary.repaired == 0 and salesforce.deleted == []
    assert {t: _rows(repo, t) for t in tables} == before


async def test_a_run_by_change_time_covers_what_changed_in_the_window_only(repo: Ledger) -> None:
    """changed_since: the Events Salesforce changed in the window (an edited one, an orphan) and the ledger
    rows changed in it (a booking ingested then, now stale) are checked; a drifted Event nobody changed in
    the window is not. The window is what Salesforce is asked for."""
    two_days_ago = NOW - timedelta(days=2)
    await repo.apply_source_batch(
        batch(
            txn(
                user("u1"),
                link(LINK_ID, "u1"),
                booking(B_OLD, LINK_ID),
                booking(B_EDITED, LINK_ID),
                lsn=BIG + 100,
            ),
            now=two_days_ago,
        )
    )
    await repo.apply_source_batch(batch(txn(booking(B_INGESTED, LINK_ID), lsn=BIG + 200)))
    with repo.engine.begin() as conn:
        event_id = "'00U00000000000' || substr(booking_id, 36, 1)"  # 00U...1 for B_OLD, and so on
        conn.execute(sa.text(f"UPDATE activities SET state = 'synced', activity_id = {event_id}"))
        conn.execute(sa.text("UPDATE links SET state = 'synced', mogli_event_id = :m"), {"m": MOGLI})
    edited = [
        EventSnapshot(
            f"00U00000000000{n}", b, False, CREATED, OWNER_SF, None, None, None, "x", None, FUTURE, FUTURE
        )
        for n, b in enumerate((B_OLD, B_EDITED, B_ORPHAN), start=1)
    ]
    mogli = MogliSnapshot(MOGLI, LINK_ID, False, CREATED, "Intro call", OWNER_SF, "one_on_one", "Say hello")
    salesforce = FakeSalesforce(events=edited, moglis=[mogli], changed_events={B_EDITED, B_ORPHAN})
    scheduler = FakeScheduler(
        user_rows={"u1": user("u1")},
        link_rows={LINK_ID: link(LINK_ID, "u1")},
        booking_rows={
            b.id: b
            for b in (
                booking(B_OLD, LINK_ID),
                booking(B_EDITED, LINK_ID),
                booking(B_INGESTED, LINK_ID, start=FUTURE + timedelta(hours=1)),
            )
        },
    )
    window = ReconcileOptions(changed_since=NOW - timedelta(hours=1), dry_run=True)
    summary = await _reconcile(repo, scheduler, salesforce, options=window)

    items = await repo.list_drift(run_id=summary.run_id)
    assert {i.booking_id for i in items} == {B_EDITED, B_ORPHAN, B_INGESTED}
    assert summary.bookings_checked == 3 and salesforce.windows == [(NOW - timedelta(hours=1), None)]
    assert ("field_mismatch", "Subject") in {
        (i.kind, i.detail.get("field")) for i in items if i.booking_id == B_EDITED
    }
    assert {i.kind for i in items if i.booking_id == B_ORPHAN} == {"orphan_event"}
    assert {i.kind for i in items if i.booking_id == B_INGESTED} == {"ledger_booking_stale"}
    run = await repo.get_reconciliation(summary.run_id)
    assert run is not None and run.scope["changed_since"] == (NOW - timedelta(hours=1)).isoformat()


class _PushedMeanwhile(FakeSalesforce):
    """The org as read while the bridge's own push writes one booking's newer version: the ledger row moves
    between the run's read of the ledger and its read of the org."""

    def __init__(self, repo: Ledger, booking_id: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._repo, self._booking_id = repo, booking_id

    async def events_by_booking(self, booking_ids: Any) -> list[EventSnapshot]:
        with self._repo.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE activities SET version = version + 1 WHERE booking_id = :b"),
                {"b": self._booking_id},
            )
        return await super().events_by_booking(booking_ids)


async def test_a_booking_the_pipeline_moves_during_the_comparison_is_not_drift(repo: Ledger) -> None:
    """An Event that differs only because the push wrote it while the run compared (its ledger row changed
    between the two reads) is not reported nor repaired; the same difference on a row that stayed put is."""
    await repo.apply_source_batch(
        batch(txn(user("u1"), link(LINK_ID, "u1"), booking(B_OLD, LINK_ID), booking(B_EDITED, LINK_ID)))
    )
    with repo.engine.begin() as conn:
        event_id = "'00U00000000000' || substr(booking_id, 36, 1)"
        conn.execute(sa.text(f"UPDATE activities SET state = 'synced', activity_id = {event_id}"))
        conn.execute(sa.text("UPDATE links SET state = 'synced', mogli_event_id = :m"), {"m": MOGLI})
    events = [
        EventSnapshot(
            f"00U00000000000{n}", b, False, CREATED, OWNER_SF, None, None, None, "x", None, FUTURE, FUTURE
        )
        for n, b in enumerate((B_OLD, B_EDITED), start=1)
    ]
    mogli = MogliSnapshot(MOGLI, LINK_ID, False, CREATED, "Intro call", OWNER_SF, "one_on_one", "Say hello")
    scheduler = FakeScheduler(
        user_rows={"u1": user("u1")},
        link_rows={LINK_ID: link(LINK_ID, "u1")},
        booking_rows={b.id: b for b in (booking(B_OLD, LINK_ID), booking(B_EDITED, LINK_ID))},
    )
    salesforce = _PushedMeanwhile(repo, B_EDITED, events=events, moglis=[mogli])

    summary = await _reconcile(repo, scheduler, salesforce)

    items = await repo.list_drift(run_id=summary.run_id)
    assert {i.booking_id for i in items if i.kind == "field_mismatch"} == {B_OLD}


class _MogliPushedMeanwhile(FakeSalesforce):
    """The org as read while the push writes the link's Mogli Event: its ledger row moves between reads."""

    def __init__(self, repo: Ledger, **kw: Any) -> None:
        super().__init__(**kw)
        self._repo = repo

    async def mogli_events_by_link(self, link_ids: Any) -> list[MogliSnapshot]:
        with self._repo.engine.begin() as conn:
            conn.execute(sa.text("UPDATE links SET version = version + 1 WHERE link_id = :l"), {"l": LINK_ID})
        return await super().mogli_events_by_link(link_ids)


async def test_a_link_the_pipeline_moves_during_the_comparison_is_not_drift(repo: Ledger) -> None:
    """A Mogli Event that differs only because the push wrote it while the run compared is not reported; the
    same difference with the link's row unchanged is."""
    await repo.apply_source_batch(batch(txn(user("u1"), link(LINK_ID, "u1"), booking(B_OLD, LINK_ID))))
    with repo.engine.begin() as conn:
        conn.execute(sa.text("UPDATE activities SET state = 'synced', activity_id = '00U000000000001'"))
        conn.execute(sa.text("UPDATE links SET state = 'synced', mogli_event_id = :m"), {"m": MOGLI})
    renamed = MogliSnapshot(MOGLI, LINK_ID, False, CREATED, "Renamed", OWNER_SF, "one_on_one", "Say hello")
    scheduler = FakeScheduler(
        user_rows={"u1": user("u1")},
        link_rows={LINK_ID: link(LINK_ID, "u1")},
        booking_rows={B_OLD: booking(B_OLD, LINK_ID)},
    )

    raced = await _reconcile(repo, scheduler, _MogliPushedMeanwhile(repo, moglis=[renamed]), dry_run=True)
    still = await _reconcile(repo, scheduler, FakeSalesforce(moglis=[renamed]), dry_run=True)

    kinds = {i.kind for i in await repo.list_drift(run_id=raced.run_id)}
    assert "mogli_field_mismatch" not in kinds
    assert "mogli_field_mismatch" in {i.kind for i in await repo.list_drift(run_id=still.run_id)}
