"""End to end: bad rows fail alone, with a readable reason in the ledger; everything else keeps flowing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge import sfid
from bridge.devtools.stack import ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean


def test_each_bad_row_fails_with_a_reason_and_later_rows_sync(stack: Stack) -> None:
    """Round robin without assignee, unconnected user, end before start, unknown link type, missing link...

    each ends as a failed activity with a readable last_error; good rows around them sync; a user who connects
    later gets their failed bookings synced without anyone retrying by hand.
    """
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    unconnected = s.add_user(None)
    good_link = s.add_link("one_on_one", owner, title="Good")
    rr_link = s.add_link("round_robin", owner, title="Pool")
    odd_link = s.add_link("carousel", owner, title="Odd")
    lonely_link = s.add_link("one_on_one", unconnected, title="Lonely")
    long_desc = "x" * 40_000
    long_link = s.add_link("one_on_one", owner, title="Long", description=long_desc)
    daemon = stack.daemon()
    daemon.start()
    try:
        start = datetime.now(UTC) + timedelta(days=1)
        bad = {
            "no_assignee": s.add_booking(rr_link, related=seed.contacts[0]),
            "end_before_start": s.add_booking(good_link, start=start, minutes=-30),
            "unknown_link_type": s.add_booking(odd_link),
            "user_not_connected": s.add_booking(lonely_link),
            "two_day_meeting": s.add_booking(good_link, minutes=2 * 24 * 60),
            "malformed_related_id": s.add_booking(good_link, related="003-not-an-id"),
        }
        # A booking on a link that does not exist (foreign keys bypassed, as a broken import would).
        s.execute("SET session_replication_role = replica")
        missing_link = s.add_booking("00000000-0000-0000-0000-000000000000")
        s.execute("SET session_replication_role = DEFAULT")
        bad["missing_link"] = missing_link

        good = {
            "plain": s.add_booking(good_link, related=seed.contacts[0]),
            "fifteen_char_contact": s.add_booking(good_link, related=seed.contacts[1][:15]),
            "long_description": s.add_booking(long_link),
        }
        wait_until(
            lambda: (
                len(ledger_activities(stack.ledger_url)) == len(bad) + len(good)
                and all(
                    a["state"] in ("synced", "failed") for a in ledger_activities(stack.ledger_url).values()
                )
            ),
            what="every booking to settle",
        )
        acts = ledger_activities(stack.ledger_url)
        for name, bid in bad.items():
            assert acts[bid]["state"] == "failed", name
            assert acts[bid]["last_error"] and len(acts[bid]["last_error"]) > 10, name
        for name, bid in good.items():
            assert acts[bid]["state"] == "synced", name
        events = {e["Scheduling_Booking_Id__c"]: e for e in stack.emulator.records("Event")}
        assert set(events) == set(good.values())
        assert sfid.same(events[good["fifteen_char_contact"]]["WhoId"], seed.contacts[1])
        desc = events[good["long_description"]]["Description"]
        assert len(desc) <= 32_000 and "truncated" in desc

        # The unconnected user connects: their booking syncs by itself.
        s.execute(
            "UPDATE scheduler.users SET salesforce_user_id=%s WHERE id=%s", (seed.users[1], unconnected)
        )
        wait_until(
            lambda: ledger_activities(stack.ledger_url)[bad["user_not_connected"]]["state"] == "synced",
            what="the newly connected user's booking to sync",
        )
        ev = next(
            e
            for e in stack.emulator.records("Event")
            if e["Scheduling_Booking_Id__c"] == bad["user_not_connected"]
        )
        assert sfid.same(ev["OwnerId"], seed.users[1])
    finally:
        assert daemon.terminate() == 0
    assert_logs_clean(daemon)
