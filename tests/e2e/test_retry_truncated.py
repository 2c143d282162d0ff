"""End to end: `retry` of bookings failed by a TRUNCATE applies the removal the truncate held back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.devtools.stack import ROOT, ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean


@pytest.mark.timeout(180)
def test_retry_of_truncated_bookings_deletes_their_events_and_drains_the_queue(stack: Stack) -> None:
    """After a TRUNCATE left each Event in Salesforce and failed its row, `retry --all-failed` through the
    running daemon deletes every Event, the rows end cancelled and nothing is left pending or failed."""
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]))
    daemon = stack.daemon()
    daemon.start()
    bookings = [s.add_booking(link, related=c) for c in seed.contacts[:2]]
    wait_until(
        lambda: {ledger_activities(stack.ledger_url).get(b, {}).get("state") for b in bookings} == {"synced"},
        what="the bookings to sync",
    )
    assert len(stack.emulator.records("Event")) == len(bookings)
    s.execute("TRUNCATE scheduler.bookings")
    wait_until(
        lambda: all(
            ledger_activities(stack.ledger_url)[b]["error_code"] == "SOURCE_TRUNCATED" for b in bookings
        ),
        what="the truncate to fail the bookings",
    )
    assert len(stack.emulator.records("Event")) == len(bookings), "a truncate deletes nothing"
    daemon.wait_started()
    retried = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), "retry", "--all-failed"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert retried.returncode == 0, retried.stderr
    assert f"requeued {len(bookings)} record(s) through the running daemon" in retried.stdout
    wait_until(
        lambda: {ledger_activities(stack.ledger_url)[b]["state"] for b in bookings} == {"cancelled"},
        what="the retried bookings to have their Events removed",
    )
    assert stack.emulator.records("Event") == []
    states = {a["state"] for a in ledger_activities(stack.ledger_url).values()}
    assert states == {"cancelled"}
    assert daemon.terminate() == 0
    assert_logs_clean(daemon)
