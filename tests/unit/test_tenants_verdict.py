"""The cross-org verdict (bridge/devtools/tenants.py) catches each kind of damage, from hand-built records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.devtools.tenants import OrgRecords, Verdict, kinds, org_of_links, verdict
from bridge.records.ledger import DEFAULT_ORG

START = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
ORGS = ("org-a", "org-b")
SF_USER = {"org-a": "005A00000000001AAA", "org-b": "005B00000000001AAA", DEFAULT_ORG: "005D00000000001AAA"}
CONTACT = {"org-a": "003A00000000001AAA", "org-b": "003B00000000001AAA", DEFAULT_ORG: "003D00000000001AAA"}


def _world(orgs: tuple[str, ...] = (*ORGS, DEFAULT_ORG), per_org: int = 2) -> dict[str, Any]:
    """Per org: one owner, one link, `per_org` bookings, and the records a correct bridge would write."""
    users, links, bookings, records = {}, {}, [], {}
    for org in orgs:
        owner = f"user-{org}"
        users[owner] = {
            "id": owner,
            "salesforce_user_id": SF_USER[org],
            "organization_id": None if org == DEFAULT_ORG else org,
        }
        link = f"link-{org}"
        links[link] = {
            "id": link,
            "link_type": "one_on_one",
            "owner_id": owner,
            "title": f"Call {org}",
            "description": "Agenda",
        }
        mogli = {"Id": f"a0X{org[-1].upper()}0000000001AAA", "Scheduling_Link_Id__c": link}
        events = []
        for n in range(per_org):
            bid = f"booking-{org}-{n}"
            start = START + timedelta(hours=n)
            bookings.append(
                {
                    "id": bid,
                    "link_id": link,
                    "assigned_user_id": None,
                    "start_at": start,
                    "end_at": start + timedelta(minutes=30),
                    "status": "scheduled",
                    "related_record_id": CONTACT[org],
                }
            )
            events.append(
                {
                    "Id": f"00U{org[-1].upper()}{n:014d}",
                    "Scheduling_Booking_Id__c": bid,
                    "OwnerId": SF_USER[org],
                    "WhoId": CONTACT[org],
                    "WhatId": mogli["Id"],
                    "Subject": f"Call {org}",
                    "Description": "Agenda",
                    "StartDateTime": start.isoformat(),
                    "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
                }
            )
        records[org] = {"events": events, "moglis": [mogli]}
    return {"users": users, "links": links, "bookings": bookings, "records": records}


def _judge(world: dict[str, Any], failed_ok: frozenset[str] = frozenset()) -> Verdict:
    return verdict(
        bookings=world["bookings"],
        links=world["links"],
        users=world["users"],
        orgs=[OrgRecords(org, r["events"], r["moglis"]) for org, r in world["records"].items()],
        failed_ok=failed_ok,
    )


def _figures(result: Verdict) -> tuple[int, int, int, int, int]:
    return (result.lost, result.doubled, result.wrong_fields, result.cross_org, result.orphans)


def test_every_event_in_its_own_org_is_clean() -> None:
    """Records exactly as the scheduler says, each in its own org (the default org included): all zero."""
    result = _judge(_world())
    assert _figures(result) == (0, 0, 0, 0, 0), result.differences
    assert result.clean


def test_a_link_owner_without_organization_belongs_to_the_default_org() -> None:
    """A link is its owner's organization's; an owner without organization puts it in the default org."""
    world = _world()
    assert org_of_links(world["links"], world["users"]) == {
        "link-org-a": "org-a",
        "link-org-b": "org-b",
        f"link-{DEFAULT_ORG}": DEFAULT_ORG,
    }


def test_a_missing_event_is_lost_in_its_org() -> None:
    """Each booking without a live Event in its own org counts once as lost."""
    world = _world()
    del world["records"]["org-a"]["events"][0]
    del world["records"]["org-b"]["events"][1]
    result = _judge(world)
    assert _figures(result) == (2, 0, 0, 0, 0)
    assert not result.clean


def test_an_event_written_to_the_wrong_org_is_cross_org_and_lost() -> None:
    """An org-a booking's Event found only in org-b: one cross-org record, and the booking lost in org-a."""
    world = _world()
    moved = world["records"]["org-a"]["events"].pop(0)
    world["records"]["org-b"]["events"].append(moved)
    result = _judge(world)
    assert _figures(result) == (1, 0, 0, 1, 0)
    assert kinds(result)["cross_org"] == 1


def test_a_copy_in_another_org_is_cross_org_not_doubled() -> None:
    """An Event in its own org and a copy in two others: two cross-org records, nothing doubled or lost."""
    world = _world()
    event = world["records"]["org-a"]["events"][0]
    world["records"]["org-b"]["events"].append(dict(event))
    world["records"][DEFAULT_ORG]["events"].append(dict(event))
    assert _figures(_judge(world)) == (0, 0, 0, 2, 0)


def test_a_mogli_event_in_another_org_is_cross_org() -> None:
    """A Mogli Event carrying another org's link id counts as cross-org."""
    world = _world()
    world["records"]["org-b"]["moglis"].append({"Id": "a0XZ", "Scheduling_Link_Id__c": "link-org-a"})
    assert _figures(_judge(world)) == (0, 0, 0, 1, 0)


def test_doubles_are_counted_within_the_org() -> None:
    """A second Event of a booking and a second Mogli Event of a link in the same org count as doubled."""
    world = _world()
    records = world["records"]["org-b"]
    records["events"].append(dict(records["events"][0], Id="00Uextra"))
    records["moglis"].append(dict(records["moglis"][0], Id="a0Xextra"))
    result = _judge(world)
    assert result.doubled == 2 and result.cross_org == 0 and result.lost == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OwnerId", SF_USER["org-b"]),  # another org's user
        ("WhoId", CONTACT["org-b"]),
        ("WhatId", "a0XZ00000000001AAA"),
        ("Subject", "Something else"),
        ("Description", None),
        ("StartDateTime", (START - timedelta(days=1)).isoformat()),
    ],
)
def test_a_wrong_field_is_counted_once_per_booking(name: str, value: Any) -> None:
    """An Event in its own org with any one field not the scheduler's counts as one wrong booking."""
    world = _world()
    world["records"]["org-a"]["events"][1][name] = value
    result = _judge(world)
    assert _figures(result) == (0, 0, 1, 0, 0)
    assert any(name in d.detail for d in result.differences)


def test_a_booked_link_without_its_mogli_event_is_wrong() -> None:
    """A booked link without its Mogli Event in its org counts once as wrong, however many bookings it has."""
    world = _world(per_org=3)
    world["records"]["org-b"]["moglis"].clear()
    world["records"][DEFAULT_ORG]["moglis"].clear()
    result = _judge(world)
    assert _figures(result) == (0, 0, 2, 0, 0)
    assert kinds(result)["mogli_event_missing"] == 6  # the oracle names it at each of the six bookings


def test_an_event_naming_no_booking_is_an_orphan() -> None:
    """An Event whose External ID names no booking of any org counts as an orphan, not cross-org."""
    world = _world()
    world["records"]["org-a"]["events"].append({"Id": "00Ux", "Scheduling_Booking_Id__c": "nobody"})
    world["records"]["org-b"]["events"].append({"Id": "00Uy"})
    assert _figures(_judge(world)) == (0, 0, 0, 0, 2)


def test_bookings_expected_to_fail_are_not_lost() -> None:
    """A booking listed as expected to fail (e.g. a cross-org assignee) without any Event is not lost."""
    world = _world()
    world["records"]["org-a"]["events"].pop(0)
    assert _judge(world, failed_ok=frozenset({"booking-org-a-0"})).clean


def test_every_kind_of_damage_is_counted_separately() -> None:
    """Lost, doubled, wrong, cross-org and orphan damage in one world: each figure counts only its own."""
    world = _world(per_org=4)
    a, b = world["records"]["org-a"], world["records"]["org-b"]
    b["events"].append(a["events"].pop(0))  # lost in a, cross-org in b
    a["events"].pop(0)  # lost
    b["events"].append(dict(b["events"][0], Id="00Udouble"))  # doubled
    a["events"][0]["Subject"] = "Wrong"  # wrong
    a["events"].append({"Id": "00Uorphan", "Scheduling_Booking_Id__c": "gone"})  # orphan
    assert _figures(_judge(world)) == (2, 1, 1, 1, 1)
