"""The fleet as one of several workers (issue 14), with hand-written runtimes and ledger: it runs exactly the
orgs membership assigns, each fenced at its epoch and permitted; a new epoch is a new runtime; a runtime that
lost its lease is not started again at that epoch; stopping is drained and reported."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.config import Settings
from bridge.records.ledger import DEFAULT_ORG, Fence, OrgRecord, OrgState
from bridge.tenancy import fleet as fleet_module
from bridge.tenancy.fleet import OrgFleet
from bridge.tenancy.parts import PermittedWriteBack, Shared
from bridge.tenancy.workers import NotPermitted, Permits

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ME = "host-1-abcd"


def _org(org_id: str) -> OrgRecord:
    return OrgRecord(
        org_id=org_id,
        name=org_id,
        login_url="https://login.example.test",
        username=f"integration@{org_id}.test",
        connection="connected",
        salesforce_org_id=None,
        instance_url=None,
        state="active",
        reason=None,
        api_used=None,
        api_limit=None,
        state_since=None,
        updated_at=NOW,
    )


class FakeRuntime:
    """Runs until stopped (or until the test makes it lose its lease); records its fence and permit."""

    started: list[FakeRuntime] = []

    def __init__(
        self,
        org: OrgRecord,
        settings: Settings,
        http: Any,
        shared: Shared,
        *,
        idle_poll_seconds: float | None = None,
        fence: Fence | None = None,
        permit: Callable[[], None] | None = None,
    ) -> None:
        self.org, self.fence, self.permit = org, fence, permit
        self.lease_lost = False
        self.lose = asyncio.Event()
        self.stopped = False
        self.parts = None
        FakeRuntime.started.append(self)

    @property
    def org_id(self) -> str:
        return self.org.org_id

    def notify(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        losing = asyncio.ensure_future(self.lose.wait())
        await asyncio.wait({stopping, losing}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        losing.cancel()
        self.lease_lost = self.lose.is_set()
        self.stopped = True


class FakeLedger:
    """`list_orgs` only: the default org and three connected orgs."""

    async def list_orgs(self) -> list[OrgRecord]:
        return [_org(DEFAULT_ORG), _org("a"), _org("b"), _org("c")]


def _running(fleet: OrgFleet) -> dict[str, int | None]:
    """The orgs with a runtime now, with the epoch of its fence."""
    return {org: _fake(fleet, org).fence.epoch for org in fleet.runtimes}  # type: ignore[union-attr]


def _fake(fleet: OrgFleet, org_id: str) -> FakeRuntime:
    """The fake runtime the fleet runs for an org."""
    runtime = fleet.runtime(org_id)
    assert isinstance(runtime, FakeRuntime)
    return runtime


async def _settle(fleet: OrgFleet, condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the fleet did not settle: {_running(fleet)}")


@pytest.fixture
def runtimes(monkeypatch: pytest.MonkeyPatch) -> list[FakeRuntime]:
    FakeRuntime.started = []
    monkeypatch.setattr(fleet_module, "OrgRuntime", FakeRuntime)
    return FakeRuntime.started


async def test_the_fleet_runs_exactly_the_assigned_orgs_fenced_and_permitted(
    runtimes: list[FakeRuntime],
) -> None:
    """Nothing before an assignment; then each assigned org at its epoch (fence = this worker, epoch) with a
    permit check that refuses once the permit is gone; a new epoch restarts the org; an org given up drains
    (busy meanwhile); a runtime that lost its lease stays stopped at that epoch; stop drains everything."""
    clock = [100.0]
    permits = Permits(ME, 10.0, monotonic=lambda: clock[0])
    shared = Shared(FakeLedger(), None, lambda: NOW, None)  # type: ignore[arg-type]
    fleet = OrgFleet(Settings(), None, shared, permits=permits)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop))
    await asyncio.sleep(0.05)
    assert fleet.runtimes == {}, "a worker serves nothing before its first round"

    permits.renewed({DEFAULT_ORG: 1, "a": 1}, clock[0])
    fleet.assign({DEFAULT_ORG: 1, "a": 1})
    await _settle(fleet, lambda: _running(fleet) == {DEFAULT_ORG: 1, "a": 1})
    first_a = _fake(fleet, "a")
    assert first_a.fence == Fence(ME, 1) and first_a.permit is not None
    assert fleet.serves("a") and not fleet.serves("b")
    first_a.permit()
    clock[0] += 8.0
    with pytest.raises(NotPermitted):
        first_a.permit()

    permits.renewed({"a": 2, "b": 1}, clock[0])
    fleet.assign({"a": 2, "b": 1})
    await _settle(fleet, lambda: _running(fleet) == {"a": 2, "b": 1})
    assert first_a.stopped and not fleet.busy(DEFAULT_ORG), "the old epoch and the given-up org drained"

    _fake(fleet, "a").lose.set()
    fleet.assign({"a": 2, "b": 1})  # the next round, before the ledger shows the loss
    await _settle(fleet, lambda: _running(fleet) == {"b": 1})
    assert [r.fence.epoch for r in runtimes if r.org_id == "a"] == [1, 2], "epoch 2 is not started again"  # type: ignore[union-attr]

    permits.renewed({"a": 3, "b": 1}, clock[0])
    fleet.assign({"a": 3, "b": 1})
    await _settle(fleet, lambda: _running(fleet) == {"a": 3, "b": 1})
    stop.set()
    await task
    assert await fleet.wait_stopped(0) and all(r.stopped for r in runtimes)


class RecordingWriter:
    """A scheduler write-back that records what it was asked to write."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []

    async def set_times(self, booking_id: str, start_at: datetime, end_at: datetime) -> bool:
        self.writes.append(("times", booking_id))
        return True

    async def set_related_record(self, booking_id: str, related_record_id: str) -> bool:
        self.writes.append(("related", booking_id))
        return True

    async def set_assigned_user(self, booking_id: str, user_id: str) -> bool:
        self.writes.append(("assigned", booking_id))
        return True


async def test_no_scheduler_write_back_once_the_permit_is_gone() -> None:
    """An org's write-back passes its permit first: written while permitted, refused (NotPermitted, which the
    inbound retries as transient) once this worker may no longer serve the org."""
    clock = [100.0]
    permits = Permits(ME, 10.0, monotonic=lambda: clock[0])
    permits.renewed({"a": 1}, clock[0])
    writer = RecordingWriter()
    permitted = PermittedWriteBack(writer, functools.partial(permits.check, "a", 1))
    assert await permitted.set_times("b1", NOW, NOW)
    clock[0] += 8.0
    for write in (
        permitted.set_times("b2", NOW, NOW),
        permitted.set_related_record("b2", "003"),
        permitted.set_assigned_user("b2", "u1"),
    ):
        with pytest.raises(NotPermitted):
            await write
    assert writer.writes == [("times", "b1")]


class UnusableOrgLedger:
    """One org whose connection names no user; records the states written to `orgs`."""

    def __init__(self) -> None:
        self.org = replace(_org("u"), username=None)
        self.written: list[tuple[str, str | None]] = []

    async def list_orgs(self) -> list[OrgRecord]:
        return [self.org]

    async def set_org_state(self, org_id: str, state: OrgState, reason: str | None) -> None:
        self.written.append((state.value, reason))
        self.org = replace(self.org, state=state.value, reason=reason)


async def test_an_unusable_org_is_marked_paused_once_not_at_every_round(runtimes: list[FakeRuntime]) -> None:
    """A held org whose connection cannot be used gets no runtime; its pause is written once, although each
    round's assignment aligns the fleet again."""
    permits = Permits(ME, 10.0)
    ledger = UnusableOrgLedger()
    shared = Shared(ledger, None, lambda: NOW, None)  # type: ignore[arg-type]
    fleet = OrgFleet(Settings(), None, shared, permits=permits)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop))
    for _ in range(3):
        permits.renewed({"u": 1}, time.monotonic())
        fleet.assign({"u": 1})
        await _settle(fleet, lambda: bool(ledger.written))
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert ledger.written == [("paused", "the org's connection names no login URL or no integration user")]
    assert runtimes == []
