"""End to end: bookings committed to PostgreSQL appear in the emulated org through the daemon process."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2

from bridge import sfid
from bridge.devtools.localpg import LocalPostgres
from bridge.devtools.stack import check_invariants, ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean


def _settled(stack: Stack, n: int) -> bool:
    """True when the ledger holds n activities and none is pending."""
    try:
        acts = ledger_activities(stack.ledger_url)
    except Exception:
        return False
    return len(acts) >= n and all(a["state"] != "pending" for a in acts.values())


def _events_by_booking(stack: Stack) -> dict[str, dict[str, Any]]:
    return {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}


def test_bookings_on_every_link_type_reach_salesforce_with_every_field(stack: Stack) -> None:
    """Bookings of every link type make one Mogli Event per link, one Event per booking, fields exact."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    rr_a, rr_b = s.add_user(seed.users[1]), s.add_user(seed.users[2])
    one = s.add_link("one_on_one", owner, title="Intro call", description="A first talk")
    rr = s.add_link("round_robin", owner, title="Sales demo", description="Product tour")
    rsvp = s.add_link("rsvp", owner, title="Webinar", description=None)
    daemon = stack.daemon()
    daemon.start()
    try:
        b_contact = s.add_booking(one, related=seed.contacts[0])
        b_rr_lead = s.add_booking(rr, related=seed.leads[0], assigned=rr_b)
        b_rr_acct = s.add_booking(rr, related=seed.accounts[0], assigned=rr_a)
        rsvp_ids = [s.add_booking(rsvp, related=c) for c in seed.contacts]
        wait_until(lambda: _settled(stack, 6), what="six bookings to settle")
        events = _events_by_booking(stack)
        moglis = {m["Scheduling_Link_Id__c"]: m for m in stack.emulator.records("Mogli_Event__c")}
        assert set(moglis) == {one, rr, rsvp}
        assert moglis[one]["Name"] == "Intro call" and moglis[one]["Link_Type__c"] == "one_on_one"
        assert sfid.same(moglis[rr]["OwnerId"], seed.users[0])

        ev = events[b_contact]
        assert sfid.same(ev["OwnerId"], seed.users[0])
        assert sfid.same(ev["WhoId"], seed.contacts[0])
        assert sfid.same(ev["WhatId"], moglis[one]["Id"])
        assert ev["Subject"] == "Intro call" and ev["Description"] == "A first talk"

        lead_ev = events[b_rr_lead]
        assert sfid.same(lead_ev["OwnerId"], seed.users[2]), "round robin: the assigned user"
        assert sfid.same(lead_ev["WhoId"], seed.leads[0])
        assert lead_ev.get("WhatId") is None, "Salesforce forbids WhatId with a Lead WhoId"
        assert sfid.same(lead_ev["Mogli_Event_Id__c"], moglis[rr]["Id"])

        acct_ev = events[b_rr_acct]
        assert acct_ev.get("WhoId") is None, "Name stays empty for an Account booking"
        assert sfid.same(acct_ev["OwnerId"], seed.users[1])
        assert sfid.same(acct_ev["WhatId"], moglis[rr]["Id"])

        for bid in rsvp_ids:
            assert sfid.same(events[bid]["OwnerId"], seed.users[0]), "RSVP: the link creator"
            assert events[bid].get("Description") is None
        assert check_invariants(stack.emulator, s, stack.ledger_url) == []
    finally:
        assert daemon.terminate() == 0
    assert_logs_clean(daemon)


def test_twenty_first_bookings_in_the_same_second_create_one_mogli_event(stack: Stack) -> None:
    """Concurrent first bookings on one link never create two Mogli Events."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("rsvp", owner, title="Launch party")
    daemon = stack.daemon()
    daemon.start()
    try:
        start = datetime.now(UTC) + timedelta(days=2)
        barrier = threading.Barrier(20)

        def book() -> None:
            conn = psycopg2.connect(stack.dsn)
            try:
                barrier.wait()
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO scheduler.bookings (id, link_id, start_at, end_at, status, "
                        "invitee_name, "
                        "related_record_id) VALUES (%s,%s,%s,%s,'scheduled','Guest',%s)",
                        (str(uuid.uuid4()), link, start, start + timedelta(hours=1), seed.contacts[0]),
                    )
            finally:
                conn.close()

        threads = [threading.Thread(target=book) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_until(lambda: _settled(stack, 20), what="twenty bookings to settle")
        moglis = [m for m in stack.emulator.records("Mogli_Event__c") if m["Scheduling_Link_Id__c"] == link]
        assert len(moglis) == 1
        events = stack.emulator.records("Event")
        assert len(events) == 20
        assert {sfid.to18(e["WhatId"]) for e in events} == {sfid.to18(moglis[0]["Id"])}
    finally:
        assert daemon.terminate() == 0


def test_reschedule_cancel_reassign_and_link_edits_reach_salesforce(stack: Stack) -> None:
    """Updates flow through: new times, a deleted Event on cancel, a new owner, and edited link text."""
    s, seed = stack.scheduler, stack.seed
    owner, other = s.add_user(seed.users[0]), s.add_user(seed.users[1])
    link = s.add_link("round_robin", owner, title="Consult", description="Old text")
    daemon = stack.daemon()
    daemon.start()
    try:
        past_start = datetime.now(UTC) - timedelta(days=1)
        moved = s.add_booking(link, related=seed.contacts[0], assigned=owner)
        cancelled = s.add_booking(link, related=seed.contacts[1], assigned=owner)
        past = s.add_booking(link, related=seed.contacts[2], assigned=owner, start=past_start)
        wait_until(lambda: _settled(stack, 3), what="three bookings to settle")
        cancelled_event = _events_by_booking(stack)[cancelled]["Id"]

        new_start = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
        s.execute(
            "UPDATE scheduler.bookings SET start_at=%s, end_at=%s, assigned_user_id=%s WHERE id=%s",
            (new_start, new_start + timedelta(minutes=45), other, moved),
        )
        s.execute("UPDATE scheduler.bookings SET status='cancelled' WHERE id=%s", (cancelled,))
        s.execute(
            "UPDATE scheduler.scheduling_links SET title='Consultation', description='New text' WHERE id=%s",
            (link,),
        )

        def updated() -> bool:
            events = _events_by_booking(stack)
            ev = events.get(moved)
            return bool(
                ev
                and ev["Subject"] == "Consultation"
                and cancelled not in events
                and sfid.same(ev["OwnerId"], seed.users[1])
            )

        wait_until(updated, what="the reschedule, cancel, reassignment and link edit")
        wait_until(lambda: _settled(stack, 3), what="the ledger to settle")
        events = _events_by_booking(stack)
        assert events[moved]["Description"] == "New text"
        assert events[moved]["StartDateTime"].startswith(new_start.strftime("%Y-%m-%dT%H:%M"))
        assert events[past]["Subject"] == "Consult", "meetings already held keep the text they had"
        deleted = {
            e["Id"] for e in stack.emulator.records("Event", include_deleted=True) if e.get("IsDeleted")
        }
        assert cancelled_event in deleted
        mogli = stack.emulator.records("Mogli_Event__c")[0]
        assert mogli["Name"] == "Consultation" and mogli["Description__c"] == "New text"
        acts = ledger_activities(stack.ledger_url)
        assert acts[cancelled]["state"] == "cancelled"
    finally:
        assert daemon.terminate() == 0


def test_cancel_in_keep_mode_keeps_the_event_with_a_prefixed_subject(stack: Stack) -> None:
    """sync.on_cancel = keep: the Event stays and its Subject starts with "Cancelled: "."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("one_on_one", owner, title="Check-in")
    daemon = stack.daemon(on_cancel="keep")
    daemon.start()
    try:
        booking = s.add_booking(link, related=seed.contacts[0])
        wait_until(lambda: _settled(stack, 1), what="the booking to settle")
        s.execute("UPDATE scheduler.bookings SET status='cancelled' WHERE id=%s", (booking,))
        wait_until(
            lambda: _events_by_booking(stack)[booking]["Subject"] == "Cancelled: Check-in",
            what="the cancelled subject",
        )
        assert check_invariants(stack.emulator, s, None, on_cancel="keep") == []
    finally:
        assert daemon.terminate() == 0


def test_deactivated_link_still_syncs_and_a_moved_booking_follows_its_new_link(stack: Stack) -> None:
    """A deactivated link's bookings still reach Salesforce; a booking moved to another link relates to it."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    old_link = s.add_link("one_on_one", owner, title="Old link")
    new_link = s.add_link("rsvp", owner, title="New link", description="Moved here")
    daemon = stack.daemon()
    daemon.start()
    try:
        s.execute("UPDATE scheduler.scheduling_links SET is_active = false WHERE id = %s", (old_link,))
        booking = s.add_booking(old_link, related=seed.contacts[0])
        wait_until(lambda: _settled(stack, 1), what="the booking on the deactivated link")
        assert _events_by_booking(stack)[booking]["Subject"] == "Old link"
        s.execute("UPDATE scheduler.bookings SET link_id = %s WHERE id = %s", (new_link, booking))
        wait_until(lambda: _events_by_booking(stack)[booking]["Subject"] == "New link", what="the move")
        moglis = {m["Scheduling_Link_Id__c"]: m["Id"] for m in stack.emulator.records("Mogli_Event__c")}
        event = _events_by_booking(stack)[booking]
        assert sfid.same(event["WhatId"], moglis[new_link])
        assert event["Description"] == "Moved here"
        assert len(stack.emulator.records("Event")) == 1
    finally:
        assert daemon.terminate() == 0


def test_a_postgresql_ledger_works_end_to_end(stack: Stack, pg_cluster: LocalPostgres) -> None:
    """The daemon keeps its ledger in PostgreSQL as well as in SQLite."""
    stack.ledger_url = pg_cluster.create_database("ledger_" + stack.slot).replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("one_on_one", owner)
    daemon = stack.daemon()
    daemon.start()
    try:
        for contact in seed.contacts:
            s.add_booking(link, related=contact)
        wait_until(lambda: _settled(stack, 3), what="three bookings in a PostgreSQL ledger")
        assert check_invariants(stack.emulator, s, stack.ledger_url) == []
    finally:
        assert daemon.terminate() == 0
