"""The inbound policy table: one row per kind of Salesforce-side change and option."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bridge.records.inbound import (
    Cascade,
    ChangeEntity,
    ChangeType,
    Field,
    KnownActivity,
    KnownLink,
    SalesforceChange,
)
from bridge.rules.policy import (
    Decision,
    IgnoreReason,
    Known,
    PolicyOptions,
    RereadKind,
    WriteBack,
    decide,
    is_echo,
)

T0 = datetime(2030, 6, 12, 15, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=30)
EVENT_ID = "00U000000000001AAA"
MOGLI_ID = "a00000000000001AAA"
OWNER = "005000000000001AAA"
OTHER_OWNER = "005000000000002AAA"
CONTACT = "003000000000001AAA"
LEAD = "00Q000000000001AAA"

ACTIVITY = KnownActivity(
    booking_id="b1",
    link_id="l1",
    activity_id=EVENT_ID,
    state="synced",
    owner_salesforce_id=OWNER,
    who_id=LEAD,
    what_id=None,
    start_at=T0,
    end_at=T1,
    assigned_user_id=None,
    related_record_id=LEAD,
    link_type="one_on_one",
)
LINK = KnownLink(link_id="l1", mogli_event_id=MOGLI_ID, state="synced", link_type="one_on_one")
KNOWN = Known(
    activities_by_sfid={EVENT_ID: ACTIVITY},
    activities_by_booking={"b1": ACTIVITY},
    links_by_sfid={MOGLI_ID: LINK},
    links_by_link_id={"l1": LINK},
)
DEFAULTS = PolicyOptions()


def event(
    change_type: ChangeType, origin: str = "com/salesforce/api/rest/60.0", **values: object
) -> SalesforceChange:
    """An Event change naming the known Event; `values` are body fields (their names become `present`)."""
    names = {
        "owner_id": Field.OWNER,
        "who_id": Field.WHO,
        "what_id": Field.WHAT,
        "start_at": Field.START,
        "end_at": Field.END,
        "external_id": Field.EXTERNAL_ID,
    }
    present = frozenset(names[k] for k in values)
    return SalesforceChange(
        channel="/data/EventChangeEvent",
        replay_id=1,
        entity=ChangeEntity.EVENT,
        change_type=change_type,
        record_ids=(EVENT_ID,),
        commit_time=T0,
        change_origin=origin,
        present=present,
        **values,  # type: ignore[arg-type]
    )


def mogli(change_type: ChangeType, **values: object) -> SalesforceChange:
    """A Mogli Event change naming the known Mogli Event."""
    return SalesforceChange(
        channel="/data/Mogli_Event__ChangeEvent",
        replay_id=1,
        entity=ChangeEntity.MOGLI_EVENT,
        change_type=change_type,
        record_ids=(MOGLI_ID,),
        commit_time=T0,
        **values,  # type: ignore[arg-type]
    )


def test_echo_origin_is_recognised_only_for_our_exact_client_name() -> None:
    """`client=<name>` must match the whole segment, not a prefix."""
    assert is_echo("com/salesforce/api/rest/60.0;client=mogli-bridge", "mogli-bridge")
    assert not is_echo("com/salesforce/api/rest/60.0;client=mogli-bridge-2", "mogli-bridge")
    assert not is_echo("com/salesforce/api/rest/60.0", "mogli-bridge")
    assert not is_echo("", "mogli-bridge")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            event(ChangeType.UPDATE, origin="com/salesforce/api/rest/60.0;client=mogli-bridge", start_at=T1),
            IgnoreReason.ECHO,
        ),
        (
            event(ChangeType.UPDATE, start_at=T0, end_at=T1, owner_id=OWNER, who_id=LEAD),
            IgnoreReason.UNCHANGED,
        ),
        (event(ChangeType.CREATE, start_at=T0, end_at=T1), IgnoreReason.UNCHANGED),
        (
            replace(event(ChangeType.UPDATE, start_at=T1), record_ids=("00U000000000009AAA",)),
            IgnoreReason.UNKNOWN_RECORD,
        ),
        (mogli(ChangeType.UPDATE), IgnoreReason.NOT_WATCHED),
    ],
)
def test_changes_that_need_nothing(change: SalesforceChange, reason: IgnoreReason) -> None:
    """Echoes, value-equal events, records we never wrote and unwatched changes are no-ops."""
    decision = decide(change, KNOWN, DEFAULTS)
    assert decision.is_noop
    assert decision.ignored is reason


@pytest.mark.parametrize(
    ("option", "state", "requeue"),
    [("keep_deleted", "deleted_in_salesforce", False), ("recreate", None, True)],
)
def test_event_deleted(option: str, state: str | None, requeue: bool) -> None:
    """A deleted Event is marked deleted_in_salesforce (default) or requeued for recreation."""
    options = replace(DEFAULTS, on_activity_deleted=option)  # type: ignore[arg-type]
    (change,) = decide(event(ChangeType.DELETE), KNOWN, options).activities
    assert (change.booking_id, change.state, change.requeue) == ("b1", state, requeue)
    assert change.action == "salesforce.event_deleted"


def test_event_deleted_twice_is_applied_once() -> None:
    """A DELETE for an activity already deleted_in_salesforce changes nothing."""
    deleted = replace(ACTIVITY, state="deleted_in_salesforce")
    known = replace(KNOWN, activities_by_sfid={EVENT_ID: deleted})
    assert decide(event(ChangeType.DELETE), known, DEFAULTS).ignored is IgnoreReason.ALREADY_APPLIED


def test_event_undeleted_restores_the_activity() -> None:
    """UNDELETE of an Event the ledger holds as deleted brings the row back to synced with its id."""
    deleted = replace(ACTIVITY, state="deleted_in_salesforce")
    known = replace(KNOWN, activities_by_sfid={EVENT_ID: deleted})
    (change,) = decide(event(ChangeType.UNDELETE, start_at=T0), known, DEFAULTS).activities
    assert (change.state, change.activity_id) == ("synced", EVENT_ID)


def test_time_changed_restores_by_default() -> None:
    """A moved Event is requeued so the scheduler's time is rewritten; the scheduler is untouched."""
    decision = decide(event(ChangeType.UPDATE, start_at=T0 + timedelta(hours=1)), KNOWN, DEFAULTS)
    (change,) = decision.activities
    assert change.requeue and change.start_at is None
    assert decision.write_backs == ()


def test_time_changed_written_back_on_option() -> None:
    """With write_back, the booking takes the new time (end kept when only the start moved)."""
    options = replace(DEFAULTS, on_time_changed="write_back")
    new_end = T1 + timedelta(minutes=15)
    decision = decide(event(ChangeType.UPDATE, end_at=new_end), KNOWN, options)
    (change,) = decision.activities
    assert (change.requeue, change.start_at, change.end_at) == (False, T0, new_end)
    assert decision.write_backs == (WriteBack("b1", start_at=T0, end_at=new_end),)


def test_time_write_back_refuses_an_inverted_interval() -> None:
    """A start after the end cannot go to the scheduler: the Event is restored instead."""
    options = replace(DEFAULTS, on_time_changed="write_back")
    decision = decide(event(ChangeType.UPDATE, start_at=T1 + timedelta(hours=1)), KNOWN, options)
    assert decision.activities[0].requeue and decision.write_backs == ()


@pytest.mark.parametrize(
    ("option", "link_type", "write_back"),
    [
        ("accept", "round_robin", False),
        ("write_back", "one_on_one", False),
        ("write_back", "round_robin", True),
    ],
)
def test_owner_changed(option: str, link_type: str, write_back: bool) -> None:
    """A new owner is recorded; only round robin with write_back sends it to the scheduler."""
    options = replace(DEFAULTS, on_owner_changed=option)  # type: ignore[arg-type]
    activity = replace(ACTIVITY, link_type=link_type)
    known = replace(KNOWN, activities_by_sfid={EVENT_ID: activity})
    decision = decide(event(ChangeType.UPDATE, owner_id=OTHER_OWNER), known, options)
    (change,) = decision.activities
    assert change.owner_salesforce_id == OTHER_OWNER and not change.requeue
    expected = (WriteBack("b1", assigned_salesforce_user_id=OTHER_OWNER),) if write_back else ()
    assert decision.write_backs == expected


def test_who_changed_is_accepted_and_written_back() -> None:
    """A converted Lead's Event now names the Contact: ledger and booking follow."""
    decision = decide(event(ChangeType.UPDATE, who_id=CONTACT), KNOWN, DEFAULTS)
    (change,) = decision.activities
    assert (change.who_id, change.related_record_id, change.action) == (
        CONTACT,
        CONTACT,
        "salesforce.who_changed",
    )
    assert decision.write_backs == (WriteBack("b1", related_record_id=CONTACT),)


def test_who_cleared_restores_the_scheduler_person() -> None:
    """Removing the person from the Event is undone by requeueing the activity."""
    decision = decide(event(ChangeType.UPDATE, who_id=None), KNOWN, DEFAULTS)
    assert decision.activities[0].requeue and decision.write_backs == ()


def test_several_changes_in_one_event_each_get_a_rule() -> None:
    """A moved and reassigned Event yields both the time and the owner effects."""
    change = event(ChangeType.UPDATE, start_at=T0 + timedelta(hours=1), owner_id=OTHER_OWNER)
    actions = sorted(a.action for a in decide(change, KNOWN, DEFAULTS).activities)
    assert actions == ["salesforce.owner_changed", "salesforce.time_changed"]


def test_mogli_event_deleted_marks_link_and_cascades() -> None:
    """Deleting the Mogli Event marks the link (its id cleared) and the Events deleted with it."""
    (change,) = decide(mogli(ChangeType.DELETE), KNOWN, DEFAULTS).links
    assert (change.link_id, change.state, change.clear_mogli_event_id, change.cascade) == (
        "l1",
        "deleted_in_salesforce",
        True,
        Cascade.MARK_DELETED,
    )


def test_mogli_event_undeleted_restores_the_link_by_external_id() -> None:
    """UNDELETE finds the link by its External ID (its id was cleared) and puts the id back."""
    deleted = replace(LINK, state="deleted_in_salesforce", mogli_event_id=None)
    known = replace(KNOWN, links_by_sfid={}, links_by_link_id={"l1": deleted})
    (change,) = decide(mogli(ChangeType.UNDELETE, external_id="l1"), known, DEFAULTS).links
    assert (change.state, change.mogli_event_id, change.cascade) == ("synced", MOGLI_ID, Cascade.RESTORE)


def test_mogli_event_undeleted_after_recreation_is_left_to_reconciliation() -> None:
    """When the link already has a new Mogli Event, the restored old one is not adopted."""
    known = replace(
        KNOWN, links_by_sfid={}, links_by_link_id={"l1": replace(LINK, mogli_event_id="a00000000000002AAA")}
    )
    decision = decide(mogli(ChangeType.UNDELETE, external_id="l1"), known, DEFAULTS)
    assert decision.ignored is IgnoreReason.ALREADY_APPLIED


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (event(ChangeType.GAP_UPDATE), RereadKind.EVENTS),
        (mogli(ChangeType.GAP_DELETE), RereadKind.MOGLI_EVENTS),
        (
            SalesforceChange(
                "/data/LeadChangeEvent",
                1,
                ChangeEntity.LEAD,
                ChangeType.UPDATE,
                (LEAD,),
                T0,
                present=frozenset({Field.IS_CONVERTED}),
                is_converted=True,
            ),
            RereadKind.EVENTS_OF_LEADS,
        ),
    ],
)
def test_changes_that_need_a_reread(change: SalesforceChange, expected: RereadKind) -> None:
    """Gap events and converted Leads are answered by re-reading the records."""
    decision = decide(change, KNOWN, DEFAULTS)
    assert decision.reread is not None and decision.reread.kind is expected


def test_lead_update_without_conversion_is_ignored() -> None:
    """A Lead edit that is not a conversion needs nothing."""
    change = SalesforceChange("/data/LeadChangeEvent", 1, ChangeEntity.LEAD, ChangeType.UPDATE, (LEAD,), T0)
    assert decide(change, KNOWN, DEFAULTS) == Decision(ignored=IgnoreReason.NOT_WATCHED)


def test_overflow_asks_for_a_reconciliation_from_its_commit_time() -> None:
    """GAP_OVERFLOW names no records: the entity is reconciled from the commit time."""
    change = SalesforceChange(
        "/data/EventChangeEvent", 1, ChangeEntity.EVENT, ChangeType.GAP_OVERFLOW, (), T0
    )
    decision = decide(change, KNOWN, DEFAULTS)
    assert decision.reconcile is not None
    assert (decision.reconcile.entity, decision.reconcile.since) == (ChangeEntity.EVENT, T0)


def test_pending_activity_is_requeued_for_a_moved_time_and_keeps_its_owner() -> None:
    """A row in flight may already be written before a person's edit: a moved time requeues it so the
    scheduler's time lands last; an owner difference waits (it may be the row's own write)."""
    pending = replace(ACTIVITY, state="pending")
    known = replace(KNOWN, activities_by_sfid={EVENT_ID: pending})
    change = event(ChangeType.UPDATE, start_at=T0 - timedelta(hours=1), owner_id=OTHER_OWNER)
    decision = decide(change, known, DEFAULTS)
    assert [(a.action, a.requeue) for a in decision.activities] == [("salesforce.time_changed", True)]
    owner_only = event(ChangeType.UPDATE, owner_id=OTHER_OWNER)
    assert decide(owner_only, known, DEFAULTS).ignored is IgnoreReason.UNCHANGED


@pytest.mark.parametrize("on_time_changed", ["restore", "write_back"])
def test_whole_second_times_of_a_sub_second_booking_are_no_move(on_time_changed: str) -> None:
    """Salesforce keeps dateTime fields to the second: an Event carrying the booking's time without its
    sub-second digits is not a person's move, so nothing is restored and nothing is written back."""
    precise = replace(
        ACTIVITY, start_at=T0 + timedelta(microseconds=594570), end_at=T1 + timedelta(microseconds=1)
    )
    known = Known(activities_by_sfid={EVENT_ID: precise}, activities_by_booking={"b1": precise})
    options = replace(DEFAULTS, on_time_changed=on_time_changed)  # type: ignore[arg-type]
    decision = decide(event(ChangeType.UPDATE, start_at=T0, end_at=T1), known, options)
    assert decision.ignored is IgnoreReason.UNCHANGED and decision.is_noop


def test_a_move_of_one_second_is_still_a_move() -> None:
    """One whole second apart is a real change of time, restored under the default policy."""
    decision = decide(
        event(ChangeType.UPDATE, start_at=T0 + timedelta(seconds=1), end_at=T1), KNOWN, DEFAULTS
    )
    assert [a.action for a in decision.activities] == ["salesforce.time_changed"]
