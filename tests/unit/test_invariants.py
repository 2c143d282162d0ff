"""The oracle: the invariant checker reports each kind of damage, fed hand-made scheduler, ledger and org
records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import sfid
from bridge.devtools.invariants import Difference, Tally, check, tally

START = datetime(2030, 6, 1, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)
OWNER, MEMBER = "u0000000-0000-4000-8000-000000000001", "u0000000-0000-4000-8000-000000000002"
LINK, RR_LINK = "10000000-0000-4000-8000-00000000000a", "10000000-0000-4000-8000-00000000000b"
BOOKING, RR_BOOKING = "b0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"
SF_OWNER, SF_MEMBER = sfid.to18("005000000000001"), sfid.to18("005000000000002")
CONTACT, OTHER_CONTACT = sfid.to18("003000000000001"), sfid.to18("003000000000002")
LEAD, ACCOUNT = sfid.to18("00Q000000000001"), sfid.to18("001000000000001")
MOGLI, RR_MOGLI, STRAY_MOGLI = (sfid.to18(f"a0X00000000000{n}") for n in (1, 2, 3))
EVENT, RR_EVENT, EXTRA_EVENT = (sfid.to18(f"00U00000000000{n}") for n in (1, 2, 3))

World = dict[str, Any]


def _sf(value: datetime) -> str:
    """A datetime as Salesforce writes it."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _booking(
    bid: str, link: str, assigned: str | None = None, related: str | None = CONTACT
) -> dict[str, Any]:
    return {
        "id": bid,
        "link_id": link,
        "assigned_user_id": assigned,
        "start_at": START,
        "end_at": END,
        "status": "scheduled",
        "related_record_id": related,
    }


def _event(eid: str, bid: str, owner: str, mogli: str, who: str | None = CONTACT) -> dict[str, Any]:
    return {
        "Id": eid,
        "Scheduling_Booking_Id__c": bid,
        "OwnerId": owner,
        "WhoId": who,
        "WhatId": mogli,
        "Subject": "Intro call",
        "Description": "Let's talk",
        "StartDateTime": _sf(START),
        "EndDateTime": _sf(END),
    }


def _world() -> World:
    """Two bookings (one-on-one, round robin), each with its Event, its link's Mogli Event, a ledger row."""
    return {
        "bookings": [_booking(BOOKING, LINK), _booking(RR_BOOKING, RR_LINK, assigned=MEMBER)],
        "links": {
            link: {
                "id": link,
                "link_type": kind,
                "owner_id": OWNER,
                "title": "Intro call",
                "description": "Let's talk",
            }
            for link, kind in ((LINK, "one_on_one"), (RR_LINK, "round_robin"))
        },
        "users": {OWNER: {"salesforce_user_id": SF_OWNER}, MEMBER: {"salesforce_user_id": SF_MEMBER}},
        "events": [
            _event(EVENT, BOOKING, SF_OWNER, MOGLI),
            _event(RR_EVENT, RR_BOOKING, SF_MEMBER, RR_MOGLI),
        ],
        "mogli_events": [
            {"Id": MOGLI, "Scheduling_Link_Id__c": LINK},
            {"Id": RR_MOGLI, "Scheduling_Link_Id__c": RR_LINK},
        ],
        "ledger_activities": {
            BOOKING: {"state": "synced", "activity_id": EVENT},
            RR_BOOKING: {"state": "synced", "activity_id": RR_EVENT},
        },
    }


def _kinds(world: World, **options: Any) -> list[tuple[str, str]]:
    return [(d.kind, d.key) for d in check(**world, **options)]


def _event_of(world: World, bid: str) -> dict[str, Any]:
    return next(e for e in world["events"] if e["Scheduling_Booking_Id__c"] == bid)


def test_an_intact_world_has_no_differences() -> None:
    """The baseline every damage test departs from: the three sides agree, so nothing is reported."""
    assert check(**_world()) == []


def test_a_missing_event_is_reported() -> None:
    """A booking whose Event never reached the org is an `event_count` difference for that booking."""
    world = _world()
    world["events"] = [e for e in world["events"] if e["Id"] != EVENT]
    world["ledger_activities"].pop(BOOKING)
    assert _kinds(world) == [("event_count", BOOKING)]


def test_a_doubled_event_is_reported() -> None:
    """Two live Events for one booking (a retried create that landed twice) are reported, not one picked."""
    world = _world()
    world["events"].append({**_event_of(world, BOOKING), "Id": EXTRA_EVENT})
    diffs = check(**world)
    assert [(d.kind, d.key) for d in diffs] == [("event_count", BOOKING)]
    assert "found 2" in diffs[0].detail


def _moved(event: dict[str, Any]) -> None:
    event["StartDateTime"] = _sf(START + timedelta(hours=1))


def _moved_end(event: dict[str, Any]) -> None:
    event["EndDateTime"] = _sf(END + timedelta(minutes=1))


def _other_owner(event: dict[str, Any]) -> None:
    event["OwnerId"] = SF_MEMBER


def _other_who(event: dict[str, Any]) -> None:
    event["WhoId"] = OTHER_CONTACT


def _no_who(event: dict[str, Any]) -> None:
    event["WhoId"] = None


def _other_what(event: dict[str, Any]) -> None:
    event["WhatId"] = RR_MOGLI


def _old_subject(event: dict[str, Any]) -> None:
    event["Subject"] = "Old title"


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (_moved, "StartDateTime"),
        (_moved_end, "EndDateTime"),
        (_other_owner, "OwnerId"),
        (_other_who, "WhoId"),
        (_no_who, "WhoId"),
        (_other_what, "WhatId"),
        (_old_subject, "Subject"),
    ],
)
def test_a_stale_event_is_reported_with_the_field(
    damage: Callable[[dict[str, Any]], None], field: str
) -> None:
    """An Event with the wrong time, owner, WhoId, WhatId or subject is a field mismatch naming that field."""
    world = _world()
    damage(_event_of(world, BOOKING))
    diffs = check(**world)
    assert [(d.kind, d.key) for d in diffs] == [("field_mismatch", BOOKING)]
    assert diffs[0].detail.startswith(f"{field}:")


def test_a_round_robin_event_owned_by_the_link_owner_is_stale() -> None:
    """For a round-robin link the assigned member owns the Event; the link owner is a wrong owner."""
    world = _world()
    _event_of(world, RR_BOOKING)["OwnerId"] = SF_OWNER
    diffs = check(**world)
    assert [(d.kind, d.key) for d in diffs] == [("field_mismatch", RR_BOOKING)]
    assert diffs[0].detail.startswith("OwnerId:")


def test_a_booking_for_a_lead_expects_the_lead_as_who_and_no_what() -> None:
    """A Lead booking's Event names the Lead and no WhatId; a WhatId left on it is reported."""
    world = _world()
    world["bookings"][0]["related_record_id"] = LEAD
    event = _event_of(world, BOOKING)
    event["WhoId"], event["WhatId"] = LEAD, None
    assert check(**world) == []
    event["WhatId"] = MOGLI
    assert _kinds(world) == [("field_mismatch", BOOKING)]


def test_a_booking_for_an_account_expects_no_who() -> None:
    """A booking related to an Account gets no WhoId; an Event that names someone anyway is reported."""
    world = _world()
    world["bookings"][0]["related_record_id"] = ACCOUNT
    _event_of(world, BOOKING)["WhoId"] = None
    assert check(**world) == []
    _event_of(world, BOOKING)["WhoId"] = CONTACT
    assert _kinds(world) == [("field_mismatch", BOOKING)]


def test_ids_compare_in_either_length() -> None:
    """The org may answer 15-character ids: they name the same records, so they are not drift."""
    world = _world()
    event = _event_of(world, BOOKING)
    event["OwnerId"], event["WhoId"], event["WhatId"] = SF_OWNER[:15], CONTACT[:15], MOGLI[:15]
    assert check(**world) == []


def test_times_compare_at_the_precision_salesforce_keeps() -> None:
    """Salesforce keeps whole seconds on Event times: a booking at 15:00:00.594 matches an Event at 15:00:00,
    and a whole second off is still reported."""
    world = _world()
    world["bookings"][0]["start_at"] = START + timedelta(microseconds=594_570)
    assert check(**world) == []
    world["bookings"][0]["start_at"] = START + timedelta(seconds=1)
    assert _kinds(world) == [("field_mismatch", BOOKING)]


def test_an_orphan_event_is_reported() -> None:
    """An Event carrying a booking id the scheduler does not have is an orphan."""
    world = _world()
    stray = "b0000000-0000-4000-8000-0000000000ff"
    world["events"].append(
        {**_event_of(world, BOOKING), "Id": EXTRA_EVENT, "Scheduling_Booking_Id__c": stray}
    )
    assert _kinds(world) == [("orphan_event", stray)]


def test_a_second_mogli_event_for_one_link_is_reported() -> None:
    """Two Mogli Events for one link are reported, whichever of them the booking's Event points at."""
    world = _world()
    world["mogli_events"].append({"Id": STRAY_MOGLI, "Scheduling_Link_Id__c": LINK})
    assert ("duplicate_mogli_event", LINK) in _kinds(world)
    world["mogli_events"].reverse()
    assert ("duplicate_mogli_event", LINK) in _kinds(world)


def test_records_given_as_one_pass_iterables_are_read_whole() -> None:
    """`events` and `mogli_events` may be generators: the checker reads each once, so a doubled Mogli Event
    is still reported and a present one is not reported missing."""
    world = _world()
    world["mogli_events"].append({"Id": STRAY_MOGLI, "Scheduling_Link_Id__c": LINK})
    events, moglis = world.pop("events"), world.pop("mogli_events")
    kinds = _kinds({**world, "events": iter(events), "mogli_events": iter(moglis)})
    assert kinds == _kinds({**world, "events": events, "mogli_events": moglis})
    assert ("duplicate_mogli_event", LINK) in kinds
    assert not [k for k in kinds if k[0] == "mogli_event_missing"]


def test_a_booked_link_without_a_mogli_event_is_reported() -> None:
    """A booking whose link has no Mogli Event in the org is reported under the link's id."""
    world = _world()
    world["mogli_events"] = [m for m in world["mogli_events"] if m["Scheduling_Link_Id__c"] != LINK]
    assert _kinds(world) == [("mogli_event_missing", LINK)]


def test_an_event_left_for_a_deleted_cancellation_is_reported() -> None:
    """Under `on_cancel = "delete"` a cancelled booking must have no live Event."""
    world = _world()
    world["bookings"][0]["status"] = "cancelled"
    assert _kinds(world) == [("cancelled_event_exists", BOOKING)]
    world["events"] = [e for e in world["events"] if e["Id"] != EVENT]
    assert check(**world) == []


def test_a_kept_cancellation_must_say_cancelled() -> None:
    """Under `on_cancel = "keep"` a cancelled booking's Event stays, its subject marked; unmarked is stale."""
    world = _world()
    world["bookings"][0]["status"] = "cancelled"
    assert _kinds(world, on_cancel="keep") == [("field_mismatch", BOOKING)]
    _event_of(world, BOOKING)["Subject"] = "Cancelled: Intro call"
    assert check(**world, on_cancel="keep") == []


@pytest.mark.parametrize(
    "row",
    [
        None,
        {"state": "pending", "activity_id": EVENT},
        {"state": "synced", "activity_id": EXTRA_EVENT},
    ],
    ids=["no row", "still pending", "other Event"],
)
def test_a_ledger_that_disagrees_is_reported(row: dict[str, Any] | None) -> None:
    """The ledger must hold the booking as synced, to the very Event the org has."""
    world = _world()
    if row is None:
        world["ledger_activities"].pop(BOOKING)
    else:
        world["ledger_activities"][BOOKING] = row
    assert _kinds(world) == [("ledger_mismatch", BOOKING)]


def test_a_booking_expected_to_fail_is_not_judged() -> None:
    """`failed_ok` names bookings the test made to fail: no Event is expected of them."""
    world = _world()
    world["events"] = [e for e in world["events"] if e["Id"] != EVENT]
    world["ledger_activities"].pop(BOOKING)
    assert check(**world, failed_ok=frozenset({BOOKING})) == []


def test_differences_are_plain_records() -> None:
    """Each difference names its kind, its key and a detail, so a report can count them by kind."""
    world = _world()
    _moved(_event_of(world, BOOKING))
    (diff,) = check(**world)
    assert isinstance(diff, Difference)
    assert (diff.kind, diff.key) == ("field_mismatch", BOOKING)
    assert "2030-06-01T16:00:00" in diff.detail


def _tally(world: World, **options: Any) -> Tally:
    return tally(
        bookings=world["bookings"], events=world["events"], mogli_events=world["mogli_events"], **options
    )


def test_the_tally_of_an_intact_world_is_zero() -> None:
    """A chaos report's `lost` and `doubled` are counted: an intact world counts none of either."""
    assert _tally(_world()) == Tally(lost=0, doubled=0)


def test_the_tally_counts_lost_and_doubled_bookings() -> None:
    """A booking without an Event counts as lost; an extra Event and an extra Mogli Event count as doubled."""
    world = _world()
    world["events"] = [e for e in world["events"] if e["Id"] != EVENT]
    world["events"].append({**_event_of(world, RR_BOOKING), "Id": EXTRA_EVENT})
    world["mogli_events"].append({"Id": STRAY_MOGLI, "Scheduling_Link_Id__c": LINK})
    assert _tally(world) == Tally(lost=1, doubled=2)


def test_the_tally_follows_the_cancel_policy() -> None:
    """A cancelled booking without an Event is not lost under `delete`, and is under `keep`."""
    world = _world()
    world["bookings"][0]["status"] = "cancelled"
    world["events"] = [e for e in world["events"] if e["Id"] != EVENT]
    assert _tally(world) == Tally(lost=0, doubled=0)
    assert _tally(world, on_cancel="keep") == Tally(lost=1, doubled=0)
    assert _tally(world, on_cancel="keep", failed_ok=frozenset({BOOKING})) == Tally(lost=0, doubled=0)
