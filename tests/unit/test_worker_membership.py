"""WorkerMembership and Permits (issue 14) over a hand-written ledger and fleet: what a round hands the fleet,
when a permit ends (a monotonic clock the test moves), surplus released only once drained, and the drain on
stop before leaving. The ledger's side of the protocol is tested on PostgreSQL in tests/adapters/ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from bridge.errors import LedgerUnavailable, SalesforceUnavailable, TransientError
from bridge.records.ledger import LeaseRound
from bridge.tenancy.workers import NotPermitted, Permits, WorkerIdentity, WorkerMembership

ME = WorkerIdentity("host-1-abcd", "host", 1)
LEASE = 10.0


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLedger:
    """Answers lease rounds from a script; records every call in order."""

    def __init__(self, rounds: list[LeaseRound]) -> None:
        self.rounds = rounds
        self.calls: list[tuple[str, object]] = []
        self.down = False

    async def heartbeat(
        self, worker_id: str, host: str, pid: int, *, reader: bool, draining: bool, lease_seconds: float
    ) -> None:
        if self.down:
            raise LedgerUnavailable("ledger unavailable: connection refused")
        self.calls.append(("heartbeat", (draining, reader)))

    async def lease_round(self, worker_id: str, *, lease_seconds: float, draining: bool) -> LeaseRound:
        self.calls.append(("lease_round", draining))
        return self.rounds[0] if len(self.rounds) == 1 else self.rounds.pop(0)

    async def release_leases(self, worker_id: str, org_ids: list[str]) -> None:
        self.calls.append(("release", sorted(org_ids)))

    async def leave(self, worker_id: str) -> None:
        self.calls.append(("leave", worker_id))


class FakeFleet:
    """Records assignments; an org stays busy until the test says its runtime stopped."""

    def __init__(self) -> None:
        self.assigned: list[dict[str, int]] = []
        self.running: set[str] = set()
        self.stopped = asyncio.Event()
        self.got_assignment = asyncio.Event()

    def assign(self, held: Mapping[str, int]) -> None:
        self.assigned.append(dict(held))
        self.running |= set(held)
        self.got_assignment.set()

    def busy(self, org_id: str) -> bool:
        return org_id in self.running

    async def wait_stopped(self, seconds: float) -> bool:
        await asyncio.sleep(0)
        return self.stopped.is_set()


def _round(held: dict[str, int], surplus: tuple[str, ...] = (), workers: int = 1) -> LeaseRound:
    return LeaseRound(held=held, surplus=surplus, live_workers=workers, share=len(held) - len(surplus))


def _membership(
    ledger: FakeLedger, fleet: FakeFleet, clock: Clock, permits: Permits | None = None
) -> tuple[WorkerMembership, Permits]:
    permits = permits or Permits(ME.worker_id, LEASE, monotonic=clock)
    membership = WorkerMembership(
        ledger,
        ME,
        permits,
        fleet,
        lease_seconds=LEASE,
        round_seconds=2.0,
        monotonic=clock,
        leave_wait_seconds=4.0,
    )
    return membership, permits


def test_a_permit_ends_lease_minus_margin_after_the_round_started() -> None:
    """Renewed by a round that started at t: permitted until t + 10 - 2, at that epoch only, never for an org
    not held; the check before a request raises NotPermitted, a transient error the client's retries (which
    retry SalesforceUnavailable) leave alone."""
    clock = Clock()
    permits = Permits(ME.worker_id, LEASE, monotonic=clock)
    assert not permits.permit("a")
    permits.renewed({"a": 3}, clock.now)
    clock.now += 7.9
    assert permits.permit("a") and permits.permit("a", 3)
    assert not permits.permit("a", 2), "an older epoch's runtime is not permitted"
    assert not permits.permit("b")
    clock.now += 0.1
    assert not permits.permit("a", 3)
    with pytest.raises(NotPermitted) as raised:
        permits.check("a", 3)
    assert isinstance(raised.value, TransientError) and not isinstance(raised.value, SalesforceUnavailable)
    permits.renewed({"a": 3}, clock.now)
    assert permits.permit("a", 3)


async def test_a_round_hands_the_fleet_its_share_and_releases_surplus_once_drained() -> None:
    """The fleet gets the held orgs minus the surplus; a surplus org still running is kept (and renewed, and
    permitted) until the fleet drained it, and released at the first round after that."""
    clock = Clock()
    ledger = FakeLedger([_round({"a": 1, "b": 4, "c": 2}, surplus=("c",), workers=2)])
    fleet = FakeFleet()
    fleet.running.add("c")  # it served c before a second worker joined
    membership, permits = _membership(ledger, fleet, clock)

    await membership.round()
    assert fleet.assigned == [{"a": 1, "b": 4}]
    assert ("release", ["c"]) not in ledger.calls
    assert permits.permit("c", 2), "calls in flight of a draining org may finish"

    fleet.running.discard("c")  # the fleet drained c
    clock.now += 2
    await membership.round()
    assert ("release", ["c"]) in ledger.calls
    assert not permits.permit("c") and permits.permit("a", 1)


async def test_no_round_reaching_the_ledger_lets_every_permit_run_out() -> None:
    """A worker cut off from the ledger cannot renew: its permits end by its own clock, before its leases."""
    clock = Clock()
    ledger = FakeLedger([_round({"a": 1})])
    fleet = FakeFleet()
    membership, permits = _membership(ledger, fleet, clock)
    await membership.round()
    ledger.down = True
    for _ in range(4):
        clock.now += 2
        assert await membership.round() is None
    assert not permits.permit("a", 1)
    assert fleet.assigned == [{"a": 1}], "nothing new was assigned without a round"


async def test_stop_drains_with_leases_renewed_then_leaves() -> None:
    """On stop: rounds say draining (nothing more is taken) and go on renewing until the fleet stopped its
    runtimes; only then the worker leaves, and no permit is left."""
    clock = Clock()
    ledger = FakeLedger([_round({"a": 1, "b": 2})])
    fleet = FakeFleet()
    membership, permits = _membership(ledger, fleet, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(membership.run(stop))
    await fleet.got_assignment.wait()
    stop.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert ("leave", ME.worker_id) not in ledger.calls, "it waits for the fleet's drain"
    assert ("heartbeat", (True, False)) in ledger.calls and ("lease_round", True) in ledger.calls
    assert permits.permit("a", 1), "draining runtimes keep their permits"
    fleet.stopped.set()
    await task
    assert ledger.calls[-1] == ("leave", ME.worker_id)
    assert not permits.permit("a", 1) and permits.held == {}
    assert fleet.assigned == [{"a": 1, "b": 2}], "a draining worker assigns nothing"
