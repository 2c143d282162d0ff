"""The invariant checker: the scheduling database, the ledger and Salesforce agree exactly.

For every booking the org holds exactly the expected Event (none for a deleted cancellation) with the expected
fields; exactly one Mogli Event per booked link; no Event without a booking; the ledger agrees with both.
It reads plain data (rows and records) so the demo, the tests and reconciliation can all use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import sfid

CONTACT, LEAD = sfid.CONTACT_PREFIX, sfid.LEAD_PREFIX


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the three sides disagree."""

    kind: str
    key: str
    detail: str


def parse_sf_datetime(value: str | None) -> datetime | None:
    """Parse `2024-06-12T15:00:00.000+0000` or ISO-8601 with Z."""
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text)


def _norm(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return sfid.to18(value)
    except ValueError:
        return value


def expected_who(related: str | None) -> str | None:
    """WhoId for a booking's related record: Contacts and Leads only."""
    rid = _norm(related)
    return rid if rid and rid[:3] in (CONTACT, LEAD) else None


def check(
    *,
    bookings: Sequence[Mapping[str, Any]],
    links: Mapping[str, Mapping[str, Any]],
    users: Mapping[str, Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    mogli_events: Iterable[Mapping[str, Any]],
    ledger_activities: Mapping[str, Mapping[str, Any]] | None = None,
    on_cancel: str = "delete",
    booking_field: str = "Scheduling_Booking_Id__c",
    link_field: str = "Scheduling_Link_Id__c",
    failed_ok: frozenset[str] = frozenset(),
) -> list[Difference]:
    """Every difference between the scheduler rows, the org's records and the ledger.

    `bookings` are scheduler rows (dicts with the reference schema's columns); `links` and `users` by id;
    `events` / `mogli_events` are live (not deleted) org records; `failed_ok` lists bookings expected to fail.
    """
    diffs: list[Difference] = []
    mogli_events = list(mogli_events)  # read twice below; a generator would be empty the second time
    by_booking: dict[str, list[Mapping[str, Any]]] = {}
    for ev in events:
        by_booking.setdefault(str(ev.get(booking_field) or ""), []).append(ev)
    mogli_count = Counter(str(m.get(link_field)) for m in mogli_events)
    mogli_by_link = {str(m.get(link_field)): m for m in mogli_events}
    booking_ids = {str(b["id"]) for b in bookings}

    for key, evs in by_booking.items():
        if key not in booking_ids:
            diffs.append(Difference("orphan_event", key, f"{len(evs)} Event(s) without a booking"))
    for link_id, count in mogli_count.items():
        if count > 1:
            diffs.append(Difference("duplicate_mogli_event", link_id, f"{count} Mogli Events"))

    for b in bookings:
        bid = str(b["id"])
        if bid in failed_ok:
            continue
        evs = by_booking.get(bid, [])
        cancelled = b["status"] == "cancelled"
        if cancelled and on_cancel == "delete":
            if evs:
                diffs.append(Difference("cancelled_event_exists", bid, f"{len(evs)} live Event(s)"))
            continue
        if len(evs) != 1:
            diffs.append(Difference("event_count", bid, f"expected 1 Event, found {len(evs)}"))
            continue
        link = links[str(b["link_id"])]
        diffs.extend(
            _compare_event(bid, b, link, users, evs[0], mogli_by_link.get(str(link["id"])), cancelled)
        )
        if ledger_activities is not None:
            act = ledger_activities.get(bid)
            if (
                act is None
                or act.get("state") != "synced"
                or not sfid.same(act.get("activity_id"), evs[0]["Id"])
            ):
                diffs.append(Difference("ledger_mismatch", bid, f"ledger row {act and dict(act)!r}"))
    return diffs


def _compare_event(
    bid: str,
    b: Mapping[str, Any],
    link: Mapping[str, Any],
    users: Mapping[str, Mapping[str, Any]],
    ev: Mapping[str, Any],
    mogli: Mapping[str, Any] | None,
    cancelled: bool,
) -> list[Difference]:
    diffs: list[Difference] = []
    if mogli is None:
        return [Difference("mogli_event_missing", str(link["id"]), "booked link without a Mogli Event")]
    owner_user = b["assigned_user_id"] if link["link_type"] == "round_robin" else link["owner_id"]
    expect = {
        "OwnerId": _norm(users[str(owner_user)]["salesforce_user_id"]),
        "WhoId": expected_who(b["related_record_id"]),
        "WhatId": None if (expected_who(b["related_record_id"]) or "")[:3] == LEAD else _norm(mogli["Id"]),
        "Subject": ("Cancelled: " if cancelled else "") + str(link["title"]),
        "Description": link["description"],
    }
    for name, want in expect.items():
        got = ev.get(name)
        got = _norm(got) if name.endswith("Id") else got
        if got != want:
            diffs.append(Difference("field_mismatch", bid, f"{name}: expected {want!r}, found {got!r}"))
    for name, want in (("StartDateTime", b["start_at"]), ("EndDateTime", b["end_at"])):
        if _whole_seconds(parse_sf_datetime(ev.get(name))) != _whole_seconds(want):
            diffs.append(Difference("field_mismatch", bid, f"{name}: expected {want}, found {ev.get(name)}"))
    return diffs


def _whole_seconds(value: datetime | None) -> datetime | None:
    """Salesforce keeps Event times to the second: sub-second digits of a booking are not drift."""
    return value.replace(microsecond=0) if value is not None else None


@dataclass(frozen=True, slots=True)
class Tally:
    """What a chaos report counts: bookings without their Event, and Events or Mogli Events too many."""

    lost: int
    doubled: int


def tally(
    *,
    bookings: Sequence[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    mogli_events: Iterable[Mapping[str, Any]],
    on_cancel: str = "delete",
    booking_field: str = "Scheduling_Booking_Id__c",
    link_field: str = "Scheduling_Link_Id__c",
    failed_ok: frozenset[str] = frozenset(),
) -> Tally:
    """Count lost bookings (an Event expected, none live) and doubles (live Events beyond one per booking,
    Mogli Events beyond one per link), from the same plain records `check` reads."""
    per_booking = Counter(str(ev.get(booking_field) or "") for ev in events)
    per_link = Counter(str(m.get(link_field) or "") for m in mogli_events)
    lost = sum(
        1
        for b in bookings
        if str(b["id"]) not in failed_ok
        and not (b["status"] == "cancelled" and on_cancel == "delete")
        and per_booking[str(b["id"])] == 0
    )
    extra_events = sum(n - 1 for key, n in per_booking.items() if key and n > 1)
    extra_moglis = sum(n - 1 for key, n in per_link.items() if key and n > 1)
    return Tally(lost=lost, doubled=extra_events + extra_moglis)
