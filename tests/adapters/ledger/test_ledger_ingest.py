"""apply_source_batch: mirror upserts, outbox queueing and the checkpoint, in one transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event

from bridge.ledger.repository import Ledger
from bridge.records.source import ChangeOp, LinkRow, SourceTable
from tests.adapters.ledger.factory import (
    BIG,
    FUTURE,
    NOW,
    OTHER_SF,
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


async def test_insert_creates_mirror_and_queues_work(repo: Ledger) -> None:
    """A first booking mirrors the rows, queues the activity at version 1 and books its link."""
    summary = await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=BIG + 5000)))
    assert (summary.users, summary.links, summary.bookings) == (1, 1, 1)
    assert summary.pending_work and summary.checkpoint == str(BIG + 5000)
    activity = await repo.get_activity("b1")
    assert activity is not None
    assert (activity.state, activity.version, activity.synced_version) == ("pending", 1, None)
    assert activity.start_at == FUTURE and activity.start_at.tzinfo is not None
    assert activity.source_lsn == BIG + 5000 and activity.related_record_id == "003000000000001AAA"
    linked = await repo.get_link("l1")
    assert linked is not None
    assert (linked.state, linked.version, linked.first_booked_at) == ("pending", 1, NOW)
    assert await repo.read_checkpoint("source") == str(BIG + 5000)


async def test_link_without_bookings_stays_unbooked(repo: Ledger) -> None:
    """A link alone is mirrored but is no Salesforce work."""
    summary = await repo.apply_source_batch(batch(setup_link()))
    linked = await repo.get_link("l1")
    assert linked is not None and linked.state == "unbooked" and linked.version == 0
    assert not summary.pending_work


async def test_unchanged_toast_columns_keep_stored_values(repo: Ledger) -> None:
    """An UPDATE that omits unchanged TOASTed columns keeps what the ledger knew."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    edit = LinkRow(
        id="l1",
        owner_id="u1",
        link_type="one_on_one",
        title="New title",
        unchanged=frozenset({"description"}),
    )
    await repo.apply_source_batch(batch(txn(change(edit, ChangeOp.UPDATE))))
    linked = await repo.get_link("l1")
    assert linked is not None
    assert linked.title == "New title" and linked.description == "Say hello"


async def test_problems_are_stored(repo: Ledger) -> None:
    """Conversion problems reported by the decoder are kept on the activity."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1", problems=("start_at: bad value",)))))
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.problems == ("start_at: bad value",)


async def test_redelivered_transactions_are_skipped(repo: Ledger) -> None:
    """Transactions at or below the stored checkpoint are not applied again."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=BIG + 9000)))
    again = txn(change(booking("b1", start=FUTURE + timedelta(hours=1)), ChangeOp.UPDATE), lsn=BIG + 9000)
    summary = await repo.apply_source_batch(batch(again))
    assert summary.skipped_txns == 1 and summary.bookings == 0
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.start_at == FUTURE and activity.version == 1
    assert await repo.read_checkpoint("source") == str(BIG + 9000)


async def test_snapshot_chunks_are_idempotent(repo: Ledger) -> None:
    """Replaying the same snapshot chunk changes nothing and bumps no version."""
    chunk = txn(user("u1"), link("l1"), booking("b1"), lsn=100, snapshot=True, last_chunk=True)
    await repo.apply_source_batch(batch(chunk))
    await repo.apply_source_batch(batch(chunk))
    activity = await repo.get_activity("b1")
    linked = await repo.get_link("l1")
    assert activity is not None and activity.version == 1
    assert linked is not None and linked.version == 1
    assert await repo.read_checkpoint("source") == "100"


async def test_snapshot_is_a_position_only_after_its_last_chunk(repo: Ledger) -> None:
    """A crash between snapshot chunks must re-read the snapshot: no checkpoint until the last chunk is in."""
    await repo.apply_source_batch(batch(txn(user("u1"), link("l1"), booking("b1"), lsn=100, snapshot=True)))
    assert await repo.read_checkpoint("source") is None
    await repo.apply_source_batch(batch(txn(booking("b2"), lsn=100, snapshot=True, last_chunk=True)))
    assert await repo.read_checkpoint("source") == "100"


async def test_failure_mid_batch_stores_nothing(repo: Ledger) -> None:
    """When the batch fails part-way, neither its rows, its journal nor its checkpoint are stored."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b0"))))
    before = await repo.read_checkpoint("source")
    calls = {"n": 0}

    def explode(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO JOURNAL"):
            calls["n"] += 1
            raise RuntimeError("disk full")

    event.listen(repo.engine, "before_cursor_execute", explode)
    try:
        with pytest.raises(RuntimeError):
            await repo.apply_source_batch(batch(txn(booking("b1")), txn(booking("b2"))))
    finally:
        event.remove(repo.engine, "before_cursor_execute", explode)
    assert calls["n"] == 1
    assert await repo.get_activity("b1") is None and await repo.get_activity("b2") is None
    assert await repo.read_checkpoint("source") == before
    assert len(await repo.list_journal(booking_id="b1")) == 0


async def test_quiet_snapshot_bookings_are_skipped(repo: Ledger) -> None:
    """Snapshot bookings the backfill policy excludes are stored as 'skipped' and book no link."""
    chunk = txn(user("u1"), link("l1"), booking("old", start=PAST), lsn=100, snapshot=True)
    summary = await repo.apply_source_batch(batch(chunk, quiet=frozenset({"old"})))
    activity = await repo.get_activity("old")
    assert activity is not None and (activity.state, activity.version) == ("skipped", 0)
    linked = await repo.get_link("l1")
    assert linked is not None and linked.state == "unbooked"
    assert not summary.pending_work
    assert await repo.claim_activity_work(NOW, 10) == []


async def test_quiet_does_not_downgrade_a_queued_row(repo: Ledger) -> None:
    """A booking already queued is not turned into 'skipped' by a later quiet snapshot chunk."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=100)))
    chunk = txn(booking("b1", start=FUTURE + timedelta(hours=2)), lsn=100, snapshot=True)
    await repo.apply_source_batch(batch(chunk, quiet=frozenset({"b1"})))
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.state == "pending" and activity.version == 2


async def test_skipped_booking_rescheduled_later_becomes_work(repo: Ledger) -> None:
    """A skipped booking that is rescheduled in the stream is queued like any other."""
    chunk = txn(user("u1"), link("l1"), booking("old", start=PAST), lsn=100, snapshot=True)
    await repo.apply_source_batch(batch(chunk, quiet=frozenset({"old"})))
    await repo.apply_source_batch(batch(txn(change(booking("old", start=FUTURE), ChangeOp.UPDATE))))
    activity = await repo.get_activity("old")
    assert activity is not None and (activity.state, activity.version) == ("pending", 1)


async def _sync_everything(repo: Ledger) -> None:
    """Mark every pending link and activity synced at its current version (what the worker would do)."""
    from bridge.records.outbound import ActivityOutcome, LinkOutcome, OutcomeState

    links = await repo.claim_link_work(NOW, 100)
    await repo.record_link_outcomes(
        [
            LinkOutcome(w.link.link_id, w.version, OutcomeState.SYNCED, mogli_event_id="a00" + w.link.link_id)
            for w in links
        ],
        NOW,
    )
    work = await repo.claim_activity_work(NOW, 1000)
    await repo.record_activity_outcomes(
        [
            ActivityOutcome(
                w.booking.booking_id, w.version, OutcomeState.SYNCED, activity_id="00U" + w.booking.booking_id
            )
            for w in work
        ],
        NOW,
    )


async def test_link_edit_requeues_only_future_activities(repo: Ledger) -> None:
    """Editing a booked link's title queues the link and its not-yet-started activities, not past ones."""
    await repo.apply_source_batch(
        batch(setup_link(), txn(booking("past", start=PAST), booking("next", start=FUTURE)))
    )
    await _sync_everything(repo)
    await repo.apply_source_batch(batch(txn(change(link("l1", title="Renamed"), ChangeOp.UPDATE))))
    linked = await repo.get_link("l1")
    future, past = await repo.get_activity("next"), await repo.get_activity("past")
    assert linked is not None and (linked.state, linked.version) == ("pending", 2)
    assert future is not None and (future.state, future.version) == ("pending", 2)
    assert past is not None and (past.state, past.version) == ("synced", 1)


async def test_deactivating_a_link_is_mirror_only(repo: Ledger) -> None:
    """is_active changes are mirrored but queue nothing."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_everything(repo)
    summary = await repo.apply_source_batch(batch(txn(change(link("l1", is_active=False), ChangeOp.UPDATE))))
    linked = await repo.get_link("l1")
    assert linked is not None and linked.is_active is False and linked.state == "synced"
    assert not summary.pending_work


async def test_user_connection_requeues_not_connected_failures(repo: Ledger) -> None:
    """When a user gets a Salesforce id, their USER_NOT_CONNECTED failures and failed links go again."""
    from bridge.records.outbound import ActivityOutcome, LinkOutcome, OutcomeState

    await repo.apply_source_batch(
        batch(
            txn(
                user("u1", None),
                user("u2", None),
                link("l1", "u1"),
                link("l2", "u9", link_type="round_robin"),
            )
        )
    )
    await repo.apply_source_batch(batch(txn(booking("b1", "l1"), booking("b2", "l2", assigned_user_id="u2"))))
    await repo.record_link_outcomes(
        [
            LinkOutcome(
                "l1",
                1,
                OutcomeState.FAILED,
                error_code="USER_NOT_CONNECTED",
                error="owner has no Salesforce user",
            ),
            LinkOutcome("l2", 1, OutcomeState.SYNCED, mogli_event_id="a01"),
        ],
        NOW,
    )
    await repo.record_activity_outcomes(
        [
            ActivityOutcome("b1", 1, OutcomeState.FAILED, error_code="LINK_FAILED", error="link failed"),
            ActivityOutcome("b2", 1, OutcomeState.FAILED, error_code="USER_NOT_CONNECTED", error="assignee"),
        ],
        NOW,
    )
    await repo.apply_source_batch(batch(txn(change(user("u1", OWNER_SF), ChangeOp.UPDATE))))
    l1, b1, b2 = await repo.get_link("l1"), await repo.get_activity("b1"), await repo.get_activity("b2")
    assert l1 is not None and (l1.state, l1.version, l1.attempts) == ("pending", 2, 0)
    assert b1 is not None and (b1.state, b1.version) == ("pending", 2)
    assert b2 is not None and b2.state == "failed"
    await repo.apply_source_batch(batch(txn(change(user("u2", OTHER_SF), ChangeOp.UPDATE))))
    b2 = await repo.get_activity("b2")
    assert b2 is not None and (b2.state, b2.version, b2.attempts) == ("pending", 2, 0)


async def test_owner_reconnect_moves_synced_links_and_future_events(repo: Ledger) -> None:
    """A synced link whose owner's Salesforce user changes goes again, with its future activities only."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("past", start=PAST), booking("next"))))
    await _sync_everything(repo)
    await repo.apply_source_batch(batch(txn(change(user("u1", OTHER_SF), ChangeOp.UPDATE))))
    linked, future, past = (
        await repo.get_link("l1"),
        await repo.get_activity("next"),
        await repo.get_activity("past"),
    )
    assert linked is not None and linked.state == "pending"
    assert future is not None and future.state == "pending"
    assert past is not None and past.state == "synced"


async def test_toast_unchanged_user_id_is_no_change(repo: Ledger) -> None:
    """A user UPDATE that does not carry salesforce_user_id changes nothing downstream."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_everything(repo)
    unchanged = user("u1", None, unchanged=frozenset({"salesforce_user_id"}))
    summary = await repo.apply_source_batch(batch(txn(change(unchanged, ChangeOp.UPDATE))))
    assert not summary.pending_work
    linked = await repo.get_link("l1")
    assert linked is not None and linked.state == "synced"


async def test_booking_moved_to_another_link(repo: Ledger) -> None:
    """A booking moved to an unbooked link queues that link as booked and the activity again."""
    await repo.apply_source_batch(batch(txn(user("u1"), link("l1"), link("l2")), txn(booking("b1", "l1"))))
    await _sync_everything(repo)
    await repo.apply_source_batch(batch(txn(change(booking("b1", "l2"), ChangeOp.UPDATE))))
    moved, target = await repo.get_activity("b1"), await repo.get_link("l2")
    assert moved is not None and (moved.link_id, moved.state, moved.version) == ("l2", "pending", 2)
    assert target is not None and (target.state, target.first_booked_at) == ("pending", NOW)


async def test_booking_without_link_is_still_queued(repo: Ledger) -> None:
    """A booking whose link the ledger does not know is stored pending (the worker fails it with a reason)."""
    await repo.apply_source_batch(batch(txn(booking("b1", "nowhere"))))
    activity = await repo.get_activity("b1")
    assert activity is not None and activity.state == "pending"
    work = await repo.claim_activity_work(NOW, 10)
    assert [w.booking.booking_id for w in work] == ["b1"] and work[0].link is None


async def test_link_arriving_after_its_booking_is_booked(repo: Ledger) -> None:
    """A link inserted after one of its bookings starts out pending, not unbooked."""
    await repo.apply_source_batch(batch(txn(booking("b1", "l1"), user("u1"), link("l1"))))
    linked = await repo.get_link("l1")
    assert linked is not None and linked.state == "pending" and linked.first_booked_at == NOW


async def test_booking_delete_and_truncate(repo: Ledger) -> None:
    """DELETE queues one booking's delete; TRUNCATE fails the live ones with a reason, deletes nothing."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), booking("b2"), booking("b3"))))
    await repo.apply_source_batch(
        batch(txn(booking("q", start=PAST), snapshot=True, lsn=1), quiet=frozenset({"q"}))
    )
    await _sync_everything(repo)
    await repo.apply_source_batch(batch(txn(change(booking("b1"), ChangeOp.DELETE))))
    b1 = await repo.get_activity("b1")
    assert b1 is not None and (b1.source_deleted, b1.state, b1.version) == (True, "pending", 2)
    await repo.apply_source_batch(batch(txn(truncate(SourceTable.BOOKINGS), booking("b4"))))
    states = {a.booking_id: (a.source_deleted, a.state) for a in await repo.list_activities(limit=None)}
    assert states["b2"] == (True, "failed") and states["b3"] == (True, "failed")
    assert states["b1"] == (True, "pending"), "a delete already queued stays queued"
    assert states["q"] == (True, "skipped")
    assert states["b4"] == (False, "pending")
    b2 = await repo.get_activity("b2")
    assert b2 is not None and b2.error_code == "SOURCE_TRUNCATED" and "truncated" in (b2.last_error or "")
    claimed = {w.booking.booking_id for w in await repo.claim_activity_work(NOW, 10)}
    assert not claimed & {"b2", "b3"}, "nothing is queued for Salesforce"
    assert b2.version == 2, "a push in flight before the truncate is stale"
    # A reload re-inserts the booking: it syncs again.
    await repo.apply_source_batch(batch(txn(booking("b2"))))
    again = await repo.get_activity("b2")
    assert again is not None and (again.source_deleted, again.state) == (False, "pending")


async def test_link_delete_and_user_delete_are_recorded(repo: Ledger) -> None:
    """A deleted link is flagged source_deleted; a deleted user keeps its row; both are journaled."""
    await repo.apply_source_batch(batch(setup_link()))
    await repo.apply_source_batch(
        batch(txn(change(LinkRow(id="l1"), ChangeOp.DELETE), change(user("u1"), ChangeOp.DELETE)))
    )
    linked = await repo.get_link("l1")
    assert linked is not None and linked.source_deleted and linked.title == "Intro call"
    actions = {(e.entity, e.action) for e in await repo.list_journal()}
    assert ("link", "source.delete") in actions and ("user", "source.delete") in actions


async def test_journal_rows_carry_lsn_and_xid(repo: Ledger) -> None:
    """Every source change is journaled as outbound with its LSN and xid."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=BIG + 777)))
    entries = await repo.list_journal(booking_id="b1")
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.direction, entry.action, entry.at) == ("outbound", "source.insert", NOW)
    assert entry.detail == {"lsn": BIG + 777, "xid": 7}


async def test_repeated_deletes_queue_once(repo: Ledger) -> None:
    """A booking deleted twice (or deleted, then truncated) is queued for deletion only once."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    gone = change(booking("b1"), ChangeOp.DELETE)
    await repo.apply_source_batch(batch(txn(gone), txn(gone), txn(truncate(SourceTable.BOOKINGS))))
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.source_deleted, activity.version) == (True, 2)


async def test_unknown_booking_delete_is_journaled_only(repo: Ledger) -> None:
    """Deleting a booking the ledger never saw creates no row but leaves a journal entry."""
    summary = await repo.apply_source_batch(batch(txn(change(booking("ghost"), ChangeOp.DELETE))))
    assert await repo.get_activity("ghost") is None and not summary.pending_work
    assert [e.action for e in await repo.list_journal(booking_id="ghost")] == ["source.delete"]


async def test_truncate_of_users_and_links_is_journal_only(repo: Ledger) -> None:
    """TRUNCATE of users or links changes no ledger row; it is journaled for the table."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    summary = await repo.apply_source_batch(
        batch(txn(truncate(SourceTable.LINKS), truncate(SourceTable.USERS)))
    )
    linked = await repo.get_link("l1")
    assert linked is not None and not linked.source_deleted and linked.version == 1
    truncations = {e.entity for e in await repo.list_journal(key="*")}
    assert truncations == {"link", "user"} and summary.links == 1 and summary.users == 1


async def test_reinserted_booking_is_live_again(repo: Ledger) -> None:
    """A booking deleted and inserted again with the same id is live and queued."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await repo.apply_source_batch(batch(txn(change(booking("b1"), ChangeOp.DELETE)), txn(booking("b1"))))
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.source_deleted, activity.state, activity.version) == (
        False,
        "pending",
        3,
    )


async def test_noop_update_queues_nothing(repo: Ledger) -> None:
    """An UPDATE that changes no mirrored column (e.g. only the invitee's name) is not Salesforce work."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await _sync_everything(repo)
    summary = await repo.apply_source_batch(batch(txn(change(booking("b1"), ChangeOp.UPDATE))))
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.state, activity.version) == ("synced", 1)
    assert not summary.pending_work


async def test_update_of_failed_booking_retries_it(repo: Ledger) -> None:
    """Any source update of a failed booking queues it again, even without a mirrored change."""
    from bridge.records.outbound import ActivityOutcome, OutcomeState

    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"))))
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.FAILED, error_code="X", error="bad")], NOW
    )
    await repo.apply_source_batch(batch(txn(change(booking("b1"), ChangeOp.UPDATE))))
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.state, activity.version, activity.attempts) == ("pending", 2, 0)
    assert activity.last_error == "bad"  # kept until the next outcome


async def test_users_keep_their_row_on_delete(repo: Ledger) -> None:
    """A deleted scheduler user keeps its ledger row and Salesforce id."""
    await repo.apply_source_batch(batch(setup_link()))
    await repo.apply_source_batch(batch(txn(change(user("u1"), ChangeOp.DELETE))))
    assert await repo.claim_link_work(NOW, 10) == []  # an unbooked link is no work
    await repo.apply_source_batch(batch(txn(booking("b1"))))
    [claimed] = await repo.claim_link_work(NOW, 10)
    assert claimed.owner is not None and claimed.owner.salesforce_user_id == OWNER_SF


async def test_round_robin_reassignment_requeues(repo: Ledger) -> None:
    """A new round-robin assignee is a mirrored change: the activity is queued with the new assignee."""
    await repo.apply_source_batch(
        batch(txn(user("u1"), user("u2", OTHER_SF), user("u3"), link("l1", link_type="round_robin")))
    )
    await repo.apply_source_batch(batch(txn(booking("b1", assigned_user_id="u2"))))
    await _sync_everything(repo)
    await repo.apply_source_batch(batch(txn(change(booking("b1", assigned_user_id="u3"), ChangeOp.UPDATE))))
    activity = await repo.get_activity("b1")
    assert activity is not None and (activity.assigned_user_id, activity.state, activity.version) == (
        "u3",
        "pending",
        2,
    )


async def test_reset_checkpoint_applies_everything_again(repo: Ledger) -> None:
    """An empty 'source' position (written by `setup --reset-source`) means none: nothing is skipped."""
    await repo.apply_source_batch(batch(setup_link(), txn(booking("b1"), lsn=BIG + 10)))
    await repo.write_checkpoint("source", "")
    summary = await repo.apply_source_batch(batch(txn(booking("b2"), lsn=BIG + 5)))
    assert summary.skipped_txns == 0 and summary.checkpoint == str(BIG + 5)
    assert await repo.get_activity("b2") is not None


async def test_late_link_requeues_bookings_that_failed_for_want_of_it(repo: Ledger) -> None:
    """A link that arrives in a later batch than its (past, failed) booking books itself and requeues it."""
    from bridge.records.outbound import ActivityOutcome, OutcomeState

    await repo.apply_source_batch(batch(txn(booking("b1", "l1", start=PAST))))
    await repo.record_activity_outcomes(
        [ActivityOutcome("b1", 1, OutcomeState.FAILED, error_code="LINK_MISSING", error="no such link")], NOW
    )
    await repo.apply_source_batch(batch(setup_link()))
    linked, activity = await repo.get_link("l1"), await repo.get_activity("b1")
    assert linked is not None and (linked.state, linked.first_booked_at) == ("pending", NOW)
    assert activity is not None and (activity.state, activity.version) == ("pending", 2)
