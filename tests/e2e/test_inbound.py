"""End to end: changes a person makes in Salesforce reach the ledger and the scheduling database by policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.devtools.stack import DaemonProcess, ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean
from .inbound_support import (
    Person,
    inbound_journal,
    inbound_stack,
    ledger_rows,
    org_overrides,
    record,
    transport,
    wait_journal,
    wait_streaming,
)

__all__ = ["inbound_stack", "org_overrides", "transport"]


@dataclass
class Synced:
    """One booking the running daemon has written to Salesforce."""

    daemon: DaemonProcess
    booking_id: str
    link_id: str
    event_id: str
    start: datetime
    person: Person


def _activity(stack: Stack, booking_id: str) -> dict[str, Any]:
    return ledger_activities(stack.ledger_url)[booking_id]


def _synced(stack: Stack, related: str | None = None, link_type: str = "one_on_one") -> Synced:
    """A link with one booking, the daemon running, the Event written and the stream connected."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link(link_type, owner)
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    assigned = s.add_user(seed.users[1]) if link_type == "round_robin" else None
    booking = s.add_booking(link, start=start, related=related or seed.contacts[0], assigned=assigned)
    daemon = stack.daemon()
    daemon.start()
    daemon.wait_started()

    def written() -> str | None:
        try:
            row = _activity(stack, booking)
        except Exception:
            return None
        return row["activity_id"] if row["state"] == "synced" else None

    event_id = wait_until(written, timeout=60, what="the Event to be written")
    wait_streaming(stack.emulator)
    return Synced(daemon, booking, link, event_id, start, Person(stack.emulator, seed.users[2]))


def _booking(stack: Stack, booking_id: str) -> dict[str, Any]:
    return next(b for b in stack.scheduler.rows("bookings") if b["id"] == booking_id)


def _stop(stack: Stack, synced: Synced) -> None:
    assert synced.daemon.terminate() == 0
    assert_logs_clean(synced.daemon)


def test_event_deleted_by_a_person_stays_deleted(inbound_stack: Stack) -> None:
    """Default policy: the ledger marks the activity deleted_in_salesforce, journals it, writes nothing."""
    stack = inbound_stack
    synced = _synced(stack)
    writes_before = stack.emulator.stats()["api_requests"]["total"]
    synced.person.delete("Event", synced.event_id)

    (entry,) = wait_journal(stack.ledger_url, "salesforce.event_deleted")
    assert entry["entity_key"] == synced.booking_id
    assert _activity(stack, synced.booking_id)["state"] == "deleted_in_salesforce"
    _stop(stack, synced)
    deleted = record(stack.emulator, "Event", synced.event_id)
    assert deleted is not None and deleted["IsDeleted"]
    assert [
        e for e in stack.emulator.records("Event") if e["Scheduling_Booking_Id__c"] == synced.booking_id
    ] == []
    # Deciding needs no Salesforce call; only the daemon's own reads of /limits may have happened.
    assert stack.emulator.stats()["api_requests"]["total"] - writes_before <= 2


def test_event_deleted_is_recreated_on_option(inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """With on_activity_deleted = "recreate", a new Event is written for the booking."""
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__ON_ACTIVITY_DELETED", "recreate")
    stack = inbound_stack
    synced = _synced(stack)
    synced.person.delete("Event", synced.event_id)

    def recreated() -> str | None:
        row = _activity(stack, synced.booking_id)
        new = row["activity_id"]
        return new if row["state"] == "synced" and new != synced.event_id else None

    new_id = wait_until(recreated, timeout=60, what="a new Event")
    _stop(stack, synced)
    live = record(stack.emulator, "Event", new_id)
    assert live is not None and not live["IsDeleted"]
    assert live["Scheduling_Booking_Id__c"] == synced.booking_id


def test_moved_event_is_restored_to_the_scheduler_time(inbound_stack: Stack) -> None:
    """Default policy: the scheduler wins; the Event gets its time back and the booking is untouched."""
    stack = inbound_stack
    synced = _synced(stack)
    moved = synced.start + timedelta(hours=2)
    synced.person.update(
        "Event",
        synced.event_id,
        {"StartDateTime": moved.isoformat(), "EndDateTime": (moved + timedelta(minutes=30)).isoformat()},
    )
    wait_journal(stack.ledger_url, "salesforce.time_changed")

    def restored() -> bool:
        event = record(stack.emulator, "Event", synced.event_id)
        return event is not None and event["StartDateTime"].startswith(
            synced.start.strftime("%Y-%m-%dT%H:%M")
        )

    wait_until(restored, timeout=60, what="the Event's time to be restored")
    wait_until(lambda: _activity(stack, synced.booking_id)["state"] == "synced", what="synced again")
    _stop(stack, synced)
    assert _booking(stack, synced.booking_id)["start_at"] == synced.start


def test_moved_event_moves_the_booking_on_option(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With on_time_changed = "write_back", the booking takes the new time and nothing comes back as work."""
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__ON_TIME_CHANGED", "write_back")
    stack = inbound_stack
    synced = _synced(stack)
    moved = synced.start + timedelta(hours=2)
    synced.person.update(
        "Event",
        synced.event_id,
        {"StartDateTime": moved.isoformat(), "EndDateTime": (moved + timedelta(minutes=45)).isoformat()},
    )
    wait_journal(stack.ledger_url, "writeback.booking_time")
    booking = wait_until(
        lambda: (b := _booking(stack, synced.booking_id))["start_at"] == moved and b, what="booking moved"
    )
    assert booking["end_at"] == moved + timedelta(minutes=45)
    activity = _activity(stack, synced.booking_id)
    assert (activity["state"], activity["version"]) == ("synced", activity["synced_version"])
    _stop(stack, synced)
    # The write-back came through replication under the writer's origin and queued nothing.
    assert _activity(stack, synced.booking_id)["version"] == activity["version"]
    event = record(stack.emulator, "Event", synced.event_id)
    assert event is not None and event["StartDateTime"].startswith(moved.strftime("%Y-%m-%dT%H:%M"))


def test_reassigned_event_is_accepted_and_recorded(inbound_stack: Stack) -> None:
    """Default policy: a new owner is recorded in the ledger and stays in Salesforce."""
    stack = inbound_stack
    synced = _synced(stack)
    new_owner = stack.seed.users[1]
    synced.person.update("Event", synced.event_id, {"OwnerId": new_owner})
    wait_journal(stack.ledger_url, "salesforce.owner_changed")
    assert _activity(stack, synced.booking_id)["owner_salesforce_id"] == new_owner
    _stop(stack, synced)
    event = record(stack.emulator, "Event", synced.event_id)
    assert event is not None and event["OwnerId"] == new_owner


def test_round_robin_reassignment_is_written_back_on_option(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With on_owner_changed = "write_back", a round robin booking's assigned user follows the new owner."""
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__ON_OWNER_CHANGED", "write_back")
    stack = inbound_stack
    synced = _synced(stack, link_type="round_robin")
    target_user = stack.scheduler.add_user(stack.seed.users[2])
    wait_until(
        lambda: any(r["user_id"] == target_user for r in _ledger_users(stack)),
        what="the new user in the ledger",
    )
    synced.person.update("Event", synced.event_id, {"OwnerId": stack.seed.users[2]})
    wait_journal(stack.ledger_url, "writeback.assigned_user")
    wait_until(
        lambda: _booking(stack, synced.booking_id)["assigned_user_id"] == target_user,
        what="the booking reassigned",
    )
    _stop(stack, synced)
    assert _activity(stack, synced.booking_id)["assigned_user_id"] == target_user


def _ledger_users(stack: Stack) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from bridge.devtools.stack import ledger_connection

    with ledger_connection(stack.ledger_url) as conn:
        return [dict(r) for r in conn.execute(sa.text("SELECT * FROM users")).mappings()]


def test_converted_lead_moves_the_booking_to_the_contact(inbound_stack: Stack) -> None:
    """A converted Lead re-points the Event to the Contact; the booking's related record follows it."""
    stack = inbound_stack
    lead = stack.seed.leads[0]
    synced = _synced(stack, related=lead)
    result = synced.person.convert_lead(lead)
    contact = result["contactId"]
    wait_journal(stack.ledger_url, "writeback.related_record")
    wait_until(
        lambda: _booking(stack, synced.booking_id)["related_record_id"] == contact, what="booking re-pointed"
    )
    activity = _activity(stack, synced.booking_id)
    assert (activity["who_id"], activity["related_record_id"]) == (contact, contact)
    _stop(stack, synced)
    event = record(stack.emulator, "Event", synced.event_id)
    assert event is not None and event["WhoId"] == contact


def test_deleted_mogli_event_is_recreated_with_the_next_booking(inbound_stack: Stack) -> None:
    """Deleting the Mogli Event marks link and Events; the link's next booking brings both back."""
    stack = inbound_stack
    synced = _synced(stack)
    link = next(r for r in ledger_rows(stack.ledger_url, "links") if r["link_id"] == synced.link_id)
    synced.person.delete("Mogli_Event__c", link["mogli_event_id"])
    wait_journal(stack.ledger_url, "salesforce.mogli_event_deleted")
    wait_until(
        lambda: _activity(stack, synced.booking_id)["state"] == "deleted_in_salesforce", what="cascade marked"
    )

    later = synced.start + timedelta(days=1)
    second = stack.scheduler.add_booking(synced.link_id, start=later, related=stack.seed.contacts[1])
    wait_journal(stack.ledger_url, "policy.recreate_mogli_event")

    def both_synced() -> bool:
        acts = ledger_activities(stack.ledger_url)
        return all(acts[b]["state"] == "synced" for b in (synced.booking_id, second))

    wait_until(both_synced, timeout=60, what="both bookings written again")
    _stop(stack, synced)
    live_mogli = [
        m for m in stack.emulator.records("Mogli_Event__c") if m["Scheduling_Link_Id__c"] == synced.link_id
    ]
    assert len(live_mogli) == 1 and live_mogli[0]["Id"] != link["mogli_event_id"]
    events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
    assert {events[b]["WhatId"] for b in (synced.booking_id, second)} == {live_mogli[0]["Id"]}


def test_gap_event_is_answered_by_reading_the_record_again(inbound_stack: Stack) -> None:
    """A GAP_DELETE (no field values) makes the bridge re-read the Event; a deleted one is marked."""
    stack = inbound_stack
    synced = _synced(stack)
    synced.person.delete("Event", synced.event_id)
    wait_journal(stack.ledger_url, "salesforce.event_deleted")
    stack.emulator.control(
        "gap", {"entity": "Event", "record_ids": [synced.event_id], "change_type": "GAP_DELETE"}
    )
    (reread,) = wait_journal(stack.ledger_url, "salesforce.reread")
    detail = reread["detail"]
    assert (json.loads(detail) if isinstance(detail, str) else detail) == {"kind": "events", "records": "1"}
    _stop(stack, synced)
    # The re-read found the record deleted, which the ledger already knew: one deletion entry only.
    assert [e["action"] for e in inbound_journal(stack.ledger_url)].count("salesforce.event_deleted") == 1


@pytest.mark.parametrize("org_overrides", [{"emit_event_updates_on_lead_convert": "false"}])
def test_converted_lead_without_event_changes_is_found_by_re_reading(inbound_stack: Stack) -> None:
    """When a conversion emits only the Lead UPDATE, the Lead's Events are re-read and the booking follows."""
    stack = inbound_stack
    lead = stack.seed.leads[0]
    synced = _synced(stack, related=lead)
    contact = synced.person.convert_lead(lead)["contactId"]
    (reread,) = wait_journal(stack.ledger_url, "salesforce.reread")
    detail = reread["detail"]
    assert (json.loads(detail) if isinstance(detail, str) else detail)["kind"] == "events_of_leads"
    wait_until(
        lambda: _booking(stack, synced.booking_id)["related_record_id"] == contact, what="booking re-pointed"
    )
    _stop(stack, synced)
    assert _activity(stack, synced.booking_id)["who_id"] == contact


@pytest.mark.parametrize("org_overrides", [{"overflow_threshold": "3"}])
def test_overflow_reconciles_events_from_the_commit_time(inbound_stack: Stack) -> None:
    """A person's transaction too big for change events (GAP_OVERFLOW, no record ids) is answered by a
    targeted reconciliation, which restores the scheduler's times."""
    stack = inbound_stack
    synced = _synced(stack)
    second = stack.scheduler.add_booking(
        synced.link_id, start=synced.start + timedelta(days=1), related=stack.seed.contacts[1]
    )
    wait_until(
        lambda: ledger_activities(stack.ledger_url).get(second, {}).get("state") == "synced",
        what="the second Event written",
    )
    second_event = _activity(stack, second)["activity_id"]
    moved = {"StartDateTime": "2031-01-01T10:00:00Z", "EndDateTime": "2031-01-01T10:30:00Z"}
    synced.person.update_many("Event", {synced.event_id: moved, second_event: moved})
    wait_journal(stack.ledger_url, "reconcile_requested", timeout=90)

    def restored() -> bool:
        events = [record(stack.emulator, "Event", i) for i in (synced.event_id, second_event)]
        return all(e is not None and not e["StartDateTime"].startswith("2031-01-01") for e in events)

    wait_until(restored, timeout=90, what="both Events restored")
    _stop(stack, synced)
    runs = ledger_rows(stack.ledger_url, "reconciliation_runs")
    assert runs and {r["requested_by"] for r in runs} == {"streaming"}
    assert "salesforce.time_changed" not in [e["action"] for e in inbound_journal(stack.ledger_url)]
