"""Claiming work and recording outcomes, with the version compare that protects concurrent changes."""

from __future__ import annotations

from datetime import timedelta

from bridge.ledger.repository import Ledger
from bridge.records.ledger import Direction, DriftItem, JournalEntry
from bridge.records.outbound import ActivityOutcome, EventFields, LinkOutcome, OutcomeState
from bridge.records.source import ChangeOp, SourceTable
from tests.adapters.ledger.factory import (
    FUTURE,
    NOW,
    OWNER_SF,
    PAST,
    batch,
    booking,
    change,
    link,
    setup_link,
    truncate,
    txn,
    user,
)

MOGLI = "a0B000000000001AAA"
EVENT = "00U000000000001AAA"
EVENT2 = "00U000000000002AAA"


def _fields(booking_id: str = "b1") -> EventFields:
    """The Event fields the worker would have written for a booking of link l1."""
    return EventFields(
        booking_id=booking_id,
        owner_id=OWNER_SF,
        who_id="003000000000001AAA",
        what_id=MOGLI,
        mogli_event_id=MOGLI,
        subject="Intro call",
        description="Say hello",
        start_at=FUTURE,
        end_at=FUTURE + timedelta(minutes=30),
    )


async def _sync_link(repo: Ledger) -> None:
    """Record link l1's Mogli Event as written at its claimed version."""
    [work] = [w for w in await repo.claim_link_work(NOW, 10) if w.link.link_id == "l1"]
    await repo.record_link_outcomes(
        [
            LinkOutcome(
                "l1", work.version, OutcomeState.SYNCED, mogli_event_id=MOGLI, owner_salesforce_id=OWNER_SF
            )
        ],
        NOW,
    )


async def test_link_claim_carries_owner(repo: Ledger) -> None:
    """A booked link is claimable with its mirror, its owner's Salesforce user and its version."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    [work] = await repo.claim_link_work(NOW, 10)
    assert work.link.link_id == "l1" and work.link.title == "Intro call" and work.version == 1
    assert work.owner is not None and work.owner.salesforce_user_id == OWNER_SF


async def test_activity_waits_for_its_mogli_event(repo: Ledger) -> None:
    """An activity is not claimed while its link's Mogli Event is still unwritten; it is once it is."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    assert await repo.claim_activity_work(NOW, 10) == []
    await _sync_link(repo)
    [work] = await repo.claim_activity_work(NOW, 10)
    assert work.link is not None and work.link.mogli_event_id == MOGLI
    assert work.owner is not None and work.owner.salesforce_user_id == OWNER_SF
    assert work.booking.start_at == FUTURE and work.version == 1 and work.activity_id is None


async def test_cancellation_does_not_wait_for_the_mogli_event(repo: Ledger) -> None:
    """A cancelled booking is claimable even when its link has no Mogli Event yet."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1", status="cancelled"))))
    assert [w.booking.booking_id for w in await repo.claim_activity_work(NOW, 10)] == ["b1"]


async def test_claim_round_trip_synced(repo: Ledger) -> None:
    """A SYNCED outcome stores the Salesforce ids and the written fields; the row is no longer claimed."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_link(repo)
    [work] = await repo.claim_activity_work(NOW, 10)
    outcome = ActivityOutcome(
        "b1", work.version, OutcomeState.SYNCED, activity_id=EVENT, fields=_fields(), rule="one_on_one"
    )
    await repo.record_activity_outcomes([outcome], NOW)
    activity = await repo.get_activity("b1")
    assert activity is not None
    assert (activity.state, activity.synced_version, activity.activity_id) == ("synced", 1, EVENT)
    assert (activity.owner_salesforce_id, activity.who_id, activity.what_id) == (
        OWNER_SF,
        "003000000000001AAA",
        MOGLI,
    )
    assert activity.synced_at == NOW and activity.attempts == 0
    linked = await repo.get_link("l1")
    assert linked is not None and (linked.state, linked.mogli_event_id, linked.owner_salesforce_id) == (
        "synced",
        MOGLI,
        OWNER_SF,
    )
    assert await repo.claim_activity_work(NOW, 10) == [] and await repo.claim_link_work(NOW, 10) == []
    [entry] = await repo.list_journal(booking_id="b1", limit=1)
    assert entry.action == "salesforce.event_upserted" and entry.detail["rule"] == "one_on_one"
    assert entry.detail["activity_id"] == EVENT


async def test_change_between_claim_and_record_stays_pending(repo: Ledger) -> None:
    """When the source changes a row after it was claimed, the stale outcome does not mark it synced."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_link(repo)
    [work] = await repo.claim_activity_work(NOW, 10)
    await repo.apply_source_batch(
        batch(txn(change(booking("b1", start=FUTURE + timedelta(hours=1)), ChangeOp.UPDATE)))
    )
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", work.version, OutcomeState.SYNCED, activity_id=EVENT, fields=_fields())], NOW
    )
    activity = await repo.get_activity("b1")
    assert activity is not None
    assert (activity.state, activity.version, activity.synced_version) == ("pending", 2, None)
    assert activity.activity_id == EVENT  # the Event exists: the next push updates it
    [again] = await repo.claim_activity_work(NOW, 10)
    assert again.version == 2 and again.activity_id == EVENT


async def test_stale_link_outcome_keeps_mogli_event_id(repo: Ledger) -> None:
    """A link edited while its Mogli Event was being created keeps the new id but stays pending."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    [work] = await repo.claim_link_work(NOW, 10)
    await repo.apply_source_batch(batch(txn(change(link("l1", title="Renamed"), ChangeOp.UPDATE))))
    await repo.record_link_outcomes(
        [LinkOutcome("l1", work.version, OutcomeState.SYNCED, mogli_event_id=MOGLI)], NOW
    )
    linked = await repo.get_link("l1")
    assert linked is not None and (linked.state, linked.mogli_event_id, linked.version) == (
        "pending",
        MOGLI,
        2,
    )
    assert [w.version for w in await repo.claim_link_work(NOW, 10)] == [2]
    # and the activity may now go, with the Mogli Event known
    assert [w.booking.booking_id for w in await repo.claim_activity_work(NOW, 10)] == ["b1"]


async def test_failed_then_requeued(repo: Ledger) -> None:
    """A FAILED outcome records the reason; requeue puts it back as pending with attempts reset."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), booking("b2"))))
    await _sync_link(repo)
    failures = [
        ActivityOutcome(
            b, 1, OutcomeState.FAILED, error_code="FIELD_INTEGRITY_EXCEPTION", error="end before start"
        )
        for b in ("b1", "b2")
    ]
    await repo.record_activity_outcomes(failures, NOW)
    failed = await repo.get_activity("b1")
    assert failed is not None and (failed.state, failed.attempts, failed.last_error) == (
        "failed",
        1,
        "end before start",
    )
    assert {f.key for f in await repo.list_failures()} == {"b1", "b2"}
    assert await repo.claim_activity_work(NOW, 10) == []
    assert await repo.requeue(booking_ids=["b1"]) == 1
    again = await repo.get_activity("b1")
    assert again is not None and (again.state, again.attempts) == ("pending", 0)
    assert [w.booking.booking_id for w in await repo.claim_activity_work(NOW, 10)] == ["b1"]
    assert await repo.requeue(all_failed=True) == 1
    assert {e.direction for e in await repo.list_journal(entity="activity", key="b2", limit=1)} == {
        Direction.ADMIN
    }


async def test_retry_waits_until_retry_at(repo: Ledger) -> None:
    """A RETRY outcome keeps the row pending and hides it from claims until its retry time."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    later = NOW + timedelta(minutes=5)
    await repo.record_link_outcomes(
        [
            LinkOutcome(
                "l1", 1, OutcomeState.RETRY, error_code="UNABLE_TO_LOCK_ROW", error="locked", retry_at=later
            )
        ],
        NOW,
    )
    linked = await repo.get_link("l1")
    assert linked is not None and (linked.state, linked.attempts, linked.next_attempt_at) == (
        "pending",
        1,
        later,
    )
    assert await repo.claim_link_work(NOW, 10) == []
    assert [w.attempts for w in await repo.claim_link_work(later, 10)] == [1]


async def test_cancelled_outcome_keeps_event_id(repo: Ledger) -> None:
    """A CANCELLED outcome settles the row as 'cancelled' and keeps the deleted Event's id."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_link(repo)
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.SYNCED, activity_id=EVENT, fields=_fields())], NOW
    )
    await repo.apply_source_batch(batch(txn(change(booking("b1", status="cancelled"), ChangeOp.UPDATE))))
    [work] = await repo.claim_activity_work(NOW, 10)
    assert work.activity_id == EVENT and work.booking.status == "cancelled"
    await repo.record_activity_outcomes([ActivityOutcome("b1", work.version, OutcomeState.CANCELLED)], NOW)
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.state, activity.activity_id) == ("cancelled", EVENT)


async def test_claim_limit_and_exclude(repo: Ledger) -> None:
    """Claims honour the limit and skip booking ids already in flight."""
    await repo.apply_source_batch(batch(setup_link(), txn(*(booking(f"b{i}") for i in range(5)))))
    await _sync_link(repo)
    assert len(await repo.claim_activity_work(NOW, 3)) == 3
    rest = await repo.claim_activity_work(NOW, 10, exclude={"b0", "b1"})
    assert {w.booking.booking_id for w in rest} == {"b2", "b3", "b4"}


async def test_round_robin_assignee_is_joined(repo: Ledger) -> None:
    """The assigned user's Salesforce id comes with a round-robin booking's work."""
    await repo.apply_source_batch(
        batch(txn(user("u1"), user("u2", "005000000000009AAA"), link("l1", link_type="round_robin")))
    )
    await repo.apply_source_batch(batch(txn(booking("b1", assigned_user_id="u2"))))
    await _sync_link(repo)
    [work] = await repo.claim_activity_work(NOW, 10)
    assert work.assignee is not None and work.assignee.salesforce_user_id == "005000000000009AAA"


async def test_counts_and_lists(repo: Ledger) -> None:
    """counts() groups by state; list filters select by link, state and booking."""
    await repo.apply_source_batch(
        batch(setup_link(), txn(user("u2"), link("l2", "u2")), txn(booking("b1"), booking("b2", "l2")))
    )
    await _sync_link(repo)
    counts = await repo.counts()
    assert counts["activities.pending"] == 2 and counts["links.synced"] == 1 and counts["links.pending"] == 1
    assert [a.booking_id for a in await repo.list_activities(link_id="l2")] == ["b2"]
    assert [link.link_id for link in await repo.list_links(state="synced")] == ["l1"]
    assert set(await repo.mirror_state(["b1", "b2", "zz"])) == {"b1", "b2"}


async def test_deleted_in_salesforce(repo: Ledger) -> None:
    """An Event deleted in Salesforce marks its activity 'deleted_in_salesforce' and journals it inbound."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_link(repo)
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.SYNCED, activity_id=EVENT, fields=_fields())], NOW
    )
    assert await repo.mark_deleted_in_salesforce([EVENT]) == 1
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.state == "deleted_in_salesforce"
    [entry] = await repo.list_journal(booking_id="b1", limit=1)
    assert entry.direction is Direction.INBOUND and entry.detail["salesforce_id"] == EVENT


async def test_reconciliation_runs_and_drift(repo: Ledger) -> None:
    """A run is opened, its drift stored and listed, and closed with a summary."""
    run_id = await repo.start_reconciliation("cli", {"links": ["l1"]}, dry_run=True)
    await repo.add_drift(
        [DriftItem(run_id=run_id, kind="missing_event", booking_id="b1", detail={"why": "absent"})]
    )
    await repo.finish_reconciliation(run_id, "finished", {"drift": 1})
    run = await repo.get_reconciliation(run_id)
    assert run is not None and (run.state, run.dry_run, run.summary, run.finished_at) == (
        "finished",
        True,
        {"drift": 1},
        NOW,
    )
    [item] = await repo.list_drift(run_id=run_id)
    assert (item.kind, item.booking_id, item.repaired, item.detail) == (
        "missing_event",
        "b1",
        False,
        {"why": "absent"},
    )


async def test_checkpoints_per_stream(repo: Ledger) -> None:
    """Checkpoints are stored and overwritten per stream."""
    assert await repo.read_checkpoint("/data/EventChangeEvent") is None
    await repo.write_checkpoint("/data/EventChangeEvent", "41")
    await repo.write_checkpoint("/data/EventChangeEvent", "42")
    assert await repo.read_checkpoint("/data/EventChangeEvent") == "42"


async def test_append_journal(repo: Ledger) -> None:
    """Entries from other directions are appended and read back newest first."""
    await repo.append_journal(
        [
            JournalEntry(NOW, Direction.RECONCILE, "activity", "b1", "reconcile.repaired", {"n": 1}),
            JournalEntry(NOW, Direction.ADMIN, "activity", "b1", "admin.note", {"n": 2}),
        ]
    )
    entries = await repo.list_journal(booking_id="b1")
    assert [e.action for e in entries] == ["admin.note", "reconcile.repaired"]
    assert entries[0].id is not None and entries[1].id is not None and entries[0].id > entries[1].id


async def test_failures_list_links_and_activities(repo: Ledger) -> None:
    """list_failures shows failed links and activities; requeue --all-failed moves both back."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await repo.record_link_outcomes(
        [
            LinkOutcome(
                "l1", 1, OutcomeState.FAILED, error_code="USER_NOT_CONNECTED", error="owner not connected"
            )
        ],
        NOW,
    )
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.FAILED, error_code="LINK_FAILED", error="link")], NOW
    )
    failures = {(f.entity, f.key, f.error_code) for f in await repo.list_failures()}
    assert failures == {("link", "l1", "USER_NOT_CONNECTED"), ("activity", "b1", "LINK_FAILED")}
    assert [f.key for f in await repo.list_failures(booking_id="b1")] == ["b1"]
    assert await repo.list_failures(since=NOW + timedelta(seconds=1)) == []
    assert await repo.requeue(all_failed=True) == 2
    assert await repo.list_failures() == []
    assert await repo.counts() == {"activities.pending": 1, "links.pending": 1}


async def test_requeue_by_booking_also_requeues_its_failed_link(repo: Ledger) -> None:
    """Retrying a booking whose link failed puts the link back in the queue too."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await repo.record_link_outcomes(
        [LinkOutcome("l1", 1, OutcomeState.FAILED, error_code="E", error="e")], NOW
    )
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.FAILED, error_code="E", error="e")], NOW
    )
    assert await repo.requeue(booking_ids=["b1"]) == 2
    linked = await repo.get_link("l1")
    assert linked is not None and linked.state == "pending"


async def test_stale_failure_stays_pending(repo: Ledger) -> None:
    """A failure recorded for an outdated version leaves the row pending for its newer version."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await repo.apply_source_batch(
        batch(txn(change(booking("b1", start=FUTURE + timedelta(hours=3)), ChangeOp.UPDATE)))
    )
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.FAILED, error_code="E", error="old")], NOW
    )
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.state, activity.version, activity.last_error) == (
        "pending",
        2,
        "old",
    )
    assert activity.attempts == 0, "the old version's failure uses none of the new version's attempts"


async def test_since_filters(repo: Ledger) -> None:
    """`since` selects rows changed, and journal entries written, at or after the given time."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    later = NOW + timedelta(hours=1)
    await repo.apply_source_batch(batch(txn(booking("b2")), now=later))
    assert [a.booking_id for a in await repo.list_activities(since=later)] == ["b2"]
    assert [e.entity_key for e in await repo.list_journal(since=later)] == ["b2"]
    assert len(await repo.list_links(since=NOW)) == 1 and await repo.list_links(since=later) == []


async def test_retry_for_an_old_version_does_not_delay_the_new_one(repo: Ledger) -> None:
    """A RETRY recorded for version 1 after version 2 was ingested leaves version 2 claimable at once,
    for a booking and for a link alike."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_link(repo)
    [work] = await repo.claim_activity_work(NOW, 10)
    assert work.version == 1
    await repo.apply_source_batch(
        batch(
            txn(change(booking("b1", start=FUTURE + timedelta(hours=1)), ChangeOp.UPDATE)),
            txn(change(link("l1", title="Renamed"), ChangeOp.UPDATE)),
        )
    )
    later = NOW + timedelta(hours=1)
    await repo.record_activity_outcomes(
        [
            ActivityOutcome(
                "b1", 1, OutcomeState.RETRY, error_code="UNABLE_TO_LOCK_ROW", error="l", retry_at=later
            )
        ],
        NOW,
    )
    await repo.record_link_outcomes(
        [
            LinkOutcome(
                "l1", 1, OutcomeState.RETRY, error_code="UNABLE_TO_LOCK_ROW", error="l", retry_at=later
            )
        ],
        NOW,
    )
    activity, linked = await repo.get_activity("b1"), await repo.get_link("l1")
    # The link edit queued the future booking again: it is at version 3.
    assert activity is not None and (activity.version, activity.next_attempt_at) == (3, None)
    assert linked is not None and (linked.version, linked.next_attempt_at) == (2, None)
    assert [w.version for w in await repo.claim_link_work(NOW, 10)] == [2]
    assert [w.version for w in await repo.claim_activity_work(NOW, 10)] == [3]


async def test_retry_of_a_truncated_booking_claims_its_removal(repo: Ledger) -> None:
    """A synced booking failed by a TRUNCATE is claimed again after `retry`, as a source delete that
    knows its Event, by id and by --all-failed; once its removal is recorded nothing is left pending."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), booking("b2"))))
    await _sync_link(repo)
    synced = [
        ActivityOutcome(w.booking.booking_id, w.version, OutcomeState.SYNCED, activity_id=event_id)
        for w, event_id in zip(await repo.claim_activity_work(NOW, 10), (EVENT, EVENT2), strict=True)
    ]
    await repo.record_activity_outcomes(synced, NOW)
    await repo.apply_source_batch(batch(txn(truncate(SourceTable.BOOKINGS))))
    assert {a.error_code for a in await repo.list_activities()} == {"SOURCE_TRUNCATED"}
    assert await repo.requeue(booking_ids=["b1"]) == 1
    [work] = await repo.claim_activity_work(NOW, 10)
    assert work.booking.booking_id == "b1" and work.booking.source_deleted and work.activity_id
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", work.version, OutcomeState.CANCELLED, activity_id=work.activity_id)], NOW
    )
    assert await repo.requeue(all_failed=True) == 1
    [work] = await repo.claim_activity_work(NOW, 10)
    assert work.booking.booking_id == "b2" and work.booking.source_deleted
    await repo.record_activity_outcomes([ActivityOutcome("b2", work.version, OutcomeState.CANCELLED)], NOW)
    assert await repo.counts() == {"activities.cancelled": 2, "links.synced": 1}


async def test_bookings_waiting_for_a_failed_link_go_again_once_it_is_written(repo: Ledger) -> None:
    """Bookings failed with MOGLI_EVENT_FAILED, a started meeting among them, are claimed again as soon as
    their link's Mogli Event is written; a booking failed for its own reason stays failed."""
    await repo.apply_source_batch(
        batch(setup_link(), txn(booking("b0", start=PAST), booking("b1"), booking("b2", start=PAST)))
    )
    await repo.record_link_outcomes(
        [LinkOutcome("l1", 1, OutcomeState.FAILED, error_code="E", error="e")], NOW
    )
    waiting = [
        ActivityOutcome(b, 1, OutcomeState.FAILED, error_code="MOGLI_EVENT_FAILED", error="link")
        for b in ("b0", "b1")
    ]
    own = ActivityOutcome("b2", 1, OutcomeState.FAILED, error_code="END_BEFORE_START", error="own")
    await repo.record_activity_outcomes([*waiting, own], NOW)
    await repo.apply_source_batch(batch(txn(change(link("l1", title="Fixed"), ChangeOp.UPDATE))))
    await _sync_link(repo)
    claimed = {w.booking.booking_id: w for w in await repo.claim_activity_work(NOW, 10)}
    assert set(claimed) == {"b0", "b1"}
    assert claimed["b0"].link is not None and claimed["b0"].link.mogli_event_id == MOGLI
    b2 = await repo.get_activity("b2")
    assert b2 is not None and (b2.state, b2.error_code) == ("failed", "END_BEFORE_START")
    [entry] = await repo.list_journal(booking_id="b0", limit=1)
    assert entry.action == "ledger.mogli_event_available" and entry.detail["link_id"] == "l1"


async def test_a_truncate_during_a_push_is_not_hidden_by_that_push_outcome(repo: Ledger) -> None:
    """A booking in flight when the bookings table is truncated stays failed with SOURCE_TRUNCATED: the
    push's late SYNCED (or FAILED) outcome belongs to the version before the truncate and changes nothing."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), booking("b2"))))
    await _sync_link(repo)
    in_flight = {w.booking.booking_id: w for w in await repo.claim_activity_work(NOW, 10)}
    await repo.apply_source_batch(batch(txn(truncate(SourceTable.BOOKINGS))))
    await repo.record_activity_outcomes(
        [
            ActivityOutcome("b1", in_flight["b1"].version, OutcomeState.SYNCED, activity_id=EVENT),
            ActivityOutcome("b2", in_flight["b2"].version, OutcomeState.FAILED, error_code="E", error="late"),
        ],
        NOW,
    )
    for booking_id in ("b1", "b2"):
        row = await repo.get_activity(booking_id)
        assert row is not None and (row.state, row.error_code) == ("failed", "SOURCE_TRUNCATED")
    b1 = await repo.get_activity("b1")
    assert b1 is not None and b1.activity_id == EVENT
    assert await repo.claim_activity_work(NOW, 10) == []
