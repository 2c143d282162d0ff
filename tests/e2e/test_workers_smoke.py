"""End to end, several workers (issue 14), the smoke test: two `mogli-bridge run` processes on one PostgreSQL
ledger with tenancy on share six customer orgs and the default org. Both get orgs, every booking lands once;
SIGTERM one and the other serves every org, and later bookings land too.

The full scenario (three workers, 60 orgs, kill -9, SIGSTOP, overlapping writers): tests/e2e/test_workers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devtools.localpg import LocalPostgres
from bridge.devtools.stack import DaemonProcess, wait_until
from bridge.devtools.tenants import TenantWorld
from bridge.records.ledger import DEFAULT_ORG

from .tenancy_support import (
    TenancyStack,
    assert_clean,
    assert_tenancy_logs_clean,
    default_org_link,
    make_tenancy_stack,
    stopped,
    wait_settled,
)

pytestmark = pytest.mark.timeout(240)
ORGS = 6


@pytest.fixture
def workers_stack(tmp_path: Path, scheduler_dsn: str, pg_cluster: LocalPostgres) -> Iterator[TenancyStack]:
    """Six connected customer orgs and the default org, with the ledger on PostgreSQL (worker mode)."""
    with make_tenancy_stack(tmp_path, scheduler_dsn, orgs=ORGS) as built:
        built.ledger_url = pg_cluster.create_database("ledger_" + scheduler_dsn.rsplit("/", 1)[1])
        yield built


def _events(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    """This daemon's log lines of one event."""
    return [line for line in daemon.log_lines() if line.get("event") == event]


def _served(daemon: DaemonProcess) -> set[str]:
    """The orgs this daemon's fleet runs now, by its log: started and not stopped since."""
    serving: set[str] = set()
    for line in daemon.log_lines():
        if line.get("event") == "fleet.org_started":
            serving.add(str(line["org"]))
        elif line.get("event") == "fleet.org_stopping":
            serving.discard(str(line["org"]))
    return serving


def _book_everywhere(world: TenantWorld, links: dict[str, str], default_link: str, contact: str) -> list[str]:
    """Two bookings in each customer org and one in the default org."""
    booked = [world.book(org, links[org.org_id]) for org in world.orgs for _ in range(2)]
    booked.append(world.scheduler.add_booking(default_link, related=contact))
    return booked


def test_two_workers_share_the_orgs_and_one_serves_all_after_the_other_is_stopped(
    workers_stack: TenancyStack,
) -> None:
    """Both workers serve orgs at once, no org by both; every booking lands once in its own org. SIGTERM the
    first (it drains and leaves, exit 0): the second serves every org and the bookings made after land."""
    world = workers_stack.world
    every_org = {org.org_id for org in world.orgs} | {DEFAULT_ORG}
    default = default_org_link(world)
    links = {org.org_id: world.add_link(org) for org in world.orgs}
    first, second = workers_stack.daemon("first"), workers_stack.daemon("second")
    first.start()
    first.wait_active()
    second.start()
    second.wait_active()

    def shared() -> bool:
        workers_stack.assert_running()
        return (
            bool(_served(first)) and bool(_served(second)) and _served(first) | _served(second) == every_org
        )

    wait_until(shared, timeout=60, interval=0.5, what="both workers to serve orgs, every org served")
    assert not _served(first) & _served(second), "no org is served by both workers"
    before = _book_everywhere(world, links, default.link, default.contact)
    wait_settled(workers_stack, before, what="the bookings made with two workers")
    assert_clean(world.verdict())

    assert stopped(first) == 0, "a worker drains and exits 0 on SIGTERM"
    assert _events(first, "workers.left"), "it left the ledger's workers"
    workers_stack.daemons.remove(first)  # stopped on purpose: no longer one that must be running
    wait_until(
        lambda: _served(second) == every_org, timeout=30, interval=0.5, what="the second to serve every org"
    )
    after = _book_everywhere(world, links, default.link, default.contact)
    wait_settled(workers_stack, after, what="the bookings made after the first worker stopped")
    assert_clean(world.verdict())
    readers = [d.log_path.name for d in (first, second) if _events(d, "workers.reader_elected")]
    print(f"workers that read the change stream, in turn: {readers}")
    assert _events(second, "workers.reader_elected"), "the second reads the stream once the first stopped"
    assert stopped(second) == 0
    for daemon in (first, second):
        assert not _events(daemon, "fleet.lease_lost"), "a drained hand-over loses no lease"
        assert_tenancy_logs_clean(daemon, world)
