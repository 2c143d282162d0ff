"""Recovery: a dropped replication slot stops the daemon loudly, and setup --reset-source heals."""

from __future__ import annotations

import subprocess
import sys

from bridge.devtools.stack import ROOT, check_invariants, ledger_activities, wait_until
from bridge.source.setup import drop_slot

from .conftest import Stack


def test_dropped_slot_is_a_clear_fatal_error_and_reset_source_recovers_without_duplicates(
    stack: Stack,
) -> None:
    """Never a silent restart from scratch: exit 1 naming the fix; after it, nothing is lost or doubled."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("one_on_one", owner)
    daemon = stack.daemon()
    daemon.start()
    first = [s.add_booking(link, related=c) for c in seed.contacts]
    wait_until(
        lambda: all(ledger_activities(stack.ledger_url).get(b, {}).get("state") == "synced" for b in first),
        what="the first bookings to sync",
    )
    daemon.wait_started()
    assert daemon.terminate() == 0

    assert drop_slot(stack.dsn, stack.slot)
    while_gone = s.add_booking(link, related=seed.contacts[0])
    daemon.start()
    assert daemon.proc is not None
    assert daemon.proc.wait(60) == 1
    fatal = [line for line in daemon.log_lines() if line.get("event") == "daemon.fatal"]
    assert fatal and "setup --reset-source" in fatal[-1]["error"]

    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), "setup", "--reset-source"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    daemon.start()
    wait_until(
        lambda: ledger_activities(stack.ledger_url).get(while_gone, {}).get("state") == "synced",
        what="the booking made while the slot was gone to sync after the re-snapshot",
    )
    dry = daemon.reconcile(dry_run=True)  # the verdict before any repair: the re-snapshot left no drift
    assert dry["via"] == "daemon" and dry["total"] == 0, dry["items"][:5]
    daemon.wait_started()
    assert daemon.terminate() == 0
    assert len(stack.emulator.records("Event")) == len(first) + 1
    assert check_invariants(stack.emulator, s, stack.ledger_url) == []
