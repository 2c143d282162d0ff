"""Two daemons on one configuration: one works, the other waits, and takes over when the first is killed."""

from __future__ import annotations

from bridge.devtools.stack import DaemonProcess, check_invariants, ledger_activities, wait_until

from .conftest import Stack


def _logged(daemon: DaemonProcess, event: str) -> bool:
    return any(line.get("event") == event for line in daemon.log_lines())


def test_standby_takes_over_after_kill_minus_nine_with_nothing_lost_or_doubled(stack: Stack) -> None:
    """Only one of two daemons started together does work; after kill -9 of it the other carries on alone."""
    s, seed = stack.scheduler, stack.seed
    owner = s.add_user(seed.users[0])
    link = s.add_link("one_on_one", owner)
    first = stack.daemon("first")
    second = stack.daemon("second", setup=False)
    first.start()
    first.wait_started()
    second.start()
    wait_until(lambda: _logged(second, "daemon.standby"), what="the second daemon to wait as a standby")
    assert not _logged(second, "daemon.started")

    before = [s.add_booking(link, related=seed.contacts[0]) for _ in range(20)]
    wait_until(
        lambda: sum(a["state"] == "synced" for a in ledger_activities(stack.ledger_url).values()) == 20,
        what="the first batch to sync",
    )
    first.kill9()
    wait_until(lambda: _logged(second, "daemon.started"), timeout=15, what="the standby to take over")
    after = [s.add_booking(link, related=seed.contacts[1]) for _ in range(20)]
    wait_until(
        lambda: all(ledger_activities(stack.ledger_url).get(b, {}).get("state") == "synced" for b in after),
        what="bookings after the takeover to sync",
    )
    assert len(before) + len(after) == len(stack.emulator.records("Event"))
    assert check_invariants(stack.emulator, s, stack.ledger_url) == []
    dry = second.reconcile(dry_run=True)  # through the daemon that took over
    assert dry["via"] == "daemon" and dry["total"] == 0, dry["items"][:5]
    assert second.terminate() == 0
