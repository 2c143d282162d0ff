"""The gap reconciler: durable requests, one run at a time, merging, back-off on pauses, resuming at start,
turns shared with the admin API's runs, and its status line (a hand-written runner and ledger, no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from bridge.pipeline.gaps import GapReconciler, GapSettings, TakingTurns
from bridge.pipeline.reconcile import ReconcileOptions, ReconcileSummary
from bridge.records.ledger import JsonObject, ReconciliationRun

T0 = datetime(2030, 6, 12, 15, 0, tzinfo=UTC)
PAUSED = "paused: the Salesforce API budget is spent (ApiLimitExhausted: 10 of 1000 left); run again"


def at(minutes: int) -> datetime:
    """A point `minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


@dataclass
class Run:
    """A stored run."""

    requested_by: str
    since: datetime | None
    state: str = "running"
    summary: JsonObject | None = None


@dataclass
class FakeLedger:
    """The runs table, as the ledger keeps it."""

    runs: dict[int, Run] = field(default_factory=dict)
    closed: list[tuple[int, str]] = field(default_factory=list)

    def add(self, run: Run) -> int:
        """Store a run; its id."""
        run_id = len(self.runs) + 1
        self.runs[run_id] = run
        return run_id

    def row(self, run_id: int) -> ReconciliationRun:
        """The stored row of a run."""
        run = self.runs[run_id]
        scope = {"changed_since": run.since.isoformat() if run.since else None}
        return ReconciliationRun(run_id, run.requested_by, scope, False, run.state, T0, None, run.summary)

    async def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """One run, or None."""
        return self.row(run_id) if run_id in self.runs else None

    async def finish_reconciliation(self, run_id: int, state: str, summary: JsonObject) -> None:
        """Close a run."""
        self.runs[run_id].state = state
        self.runs[run_id].summary = summary
        self.closed.append((run_id, state))

    async def unfinished_reconciliations(self, requested_by: str) -> list[ReconciliationRun]:
        """The requester's paused or running runs, oldest first."""
        return [
            self.row(i)
            for i, r in sorted(self.runs.items())
            if r.requested_by == requested_by and r.state in ("running", "paused")
        ]


@dataclass
class FakeRunner:
    """A Reconciler over the fake ledger: `start` resumes the newest unfinished run of the same window that
    is not executing, else opens one; `execute` ends as the script says (default finished) after `gate`."""

    ledger: FakeLedger
    requested_by: str = "streaming"
    script: list[str | Exception] = field(default_factory=list)
    gate: asyncio.Event | None = None
    executions: list[tuple[int, datetime | None]] = field(default_factory=list)
    executing: set[int] = field(default_factory=set)

    async def start(self, options: ReconcileOptions) -> int:
        """Open or resume a run."""
        for run_id in sorted(self.ledger.runs, reverse=True):
            run = self.ledger.runs[run_id]
            same = run.since == options.changed_since and run.state in ("running", "paused")
            if same and run_id not in self.executing:
                run.state = "running"
                return run_id
        return self.ledger.add(Run(options.requested_by, options.changed_since))

    async def execute(self, run_id: int, options: ReconcileOptions) -> ReconcileSummary:
        """Run it: wait for the gate, then end as scripted."""
        self.executing.add(run_id)
        self.executions.append((run_id, options.changed_since))
        try:
            if self.gate is not None:
                await self.gate.wait()
            outcome = self.script.pop(0) if self.script else "finished"
            if isinstance(outcome, Exception):
                self.ledger.runs[run_id].state = "failed"
                raise outcome
        finally:
            self.executing.discard(run_id)
        run = self.ledger.runs[run_id]
        run.state, run.summary = outcome, {"after": "booking-1"}
        message = PAUSED if outcome == "paused" else None
        return ReconcileSummary(run_id, outcome, False, {}, 0, 0, 1, message)


@dataclass
class Waits:
    """The back-off sleeps asked for; each returns at once, or when `release` is set if `hold`."""

    delays: list[float] = field(default_factory=list)
    hold: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, stop: asyncio.Event, seconds: float) -> bool:
        """Record the delay; True when stopped."""
        self.delays.append(seconds)
        if self.hold:
            await self.release.wait()
        await asyncio.sleep(0)
        return stop.is_set()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop turn until `condition` holds (no wall-clock time involved)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def ledger() -> FakeLedger:
    """An empty runs table."""
    return FakeLedger()


@pytest.fixture
def runner(ledger: FakeLedger) -> FakeRunner:
    """A runner over it."""
    return FakeRunner(ledger)


@pytest.fixture
def waits() -> Waits:
    """Recorded back-off sleeps."""
    return Waits()


@pytest.fixture
def gaps(runner: FakeRunner, ledger: FakeLedger, waits: Waits) -> GapReconciler:
    """The component, with a back-off of 10 s doubling to at most 30 s."""
    return GapReconciler(runner, ledger, settings=GapSettings(10.0, 30.0, drain_seconds=5.0), wait=waits)


@pytest.fixture
async def running(gaps: GapReconciler) -> Iterator[asyncio.Event]:
    """The component running as the supervisor runs it; stopped (and awaited) after the test."""
    stop = asyncio.Event()
    task = asyncio.create_task(gaps.run(stop))
    yield stop
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_request_opens_its_run_before_returning_and_executes_it_later(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger
) -> None:
    """`request` returns once the run is open in the ledger (a kill now would leave it to resume), without
    executing it; the component executes it and it ends finished."""
    await gaps.request(at(1), "lost:/data/X")
    assert {i: (r.since, r.state) for i, r in ledger.runs.items()} == {1: (at(1), "running")}
    assert runner.executions == []
    assert gaps.status == "run 1 waiting"
    stop = asyncio.Event()
    task = asyncio.create_task(gaps.run(stop))
    await until(lambda: gaps.status == "idle", "the run ended")
    assert runner.executions == [(1, at(1))] and ledger.runs[1].state == "finished"
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_requests_during_a_run_merge_into_one_next_run_from_the_earliest_since(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger, running: asyncio.Event
) -> None:
    """Requests that arrive while a run executes wait for it; then one run from the earliest `since` covers
    them all (the other fresh runs are closed as merged into it), and each request's reason is reported."""
    runner.gate = asyncio.Event()
    await gaps.request(at(1), "first")
    await until(lambda: runner.executions == [(1, at(1))], "the first run executing")
    await gaps.request(at(30), "later")
    await gaps.request(at(20), "earlier")
    await gaps.request(at(40), "covered")  # inside the waiting run from minute 20: no run of its own
    assert sorted(ledger.runs) == [1, 2, 3]
    assert gaps.status.startswith("run 1 running") and gaps.status.endswith("; 2 more waiting")
    with capture_logs() as logs:
        runner.gate.set()
        await until(lambda: ledger.runs[3].state == "finished", "the merged run finished")
    assert runner.executions == [(1, at(1)), (3, at(20))]
    assert ledger.closed == [(2, "finished")]
    assert "merged into run 3" in str((ledger.runs[2].summary or {})["message"])
    reported = [(e["run_id"], e["reason"]) for e in logs if e["event"] == "inbound.reconciled"]
    assert reported == [(1, "first"), (3, "earlier"), (3, "covered"), (3, "later")]


async def test_a_run_with_progress_is_never_widened_by_a_later_request(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger, waits: Waits, running: asyncio.Event
) -> None:
    """A paused run that has checked some records is resumed on its own; a later request gets a run of its
    own, since the paused run would not check again what it checked before the request."""
    runner.script = ["paused"]
    waits.hold = True
    await gaps.request(at(1), "first")
    await until(lambda: waits.delays == [10.0], "the pause")
    await gaps.request(at(5), "later")
    assert sorted(ledger.runs) == [1, 2]
    waits.release.set()
    await until(lambda: ledger.runs[2].state == "finished", "both runs finished")
    assert runner.executions == [(1, at(1)), (1, at(1)), (2, at(5))]
    assert ledger.runs[1].state == "finished" and ledger.closed == []


async def test_a_paused_run_is_resumed_with_a_capped_back_off_until_it_finishes(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger, waits: Waits, running: asyncio.Event
) -> None:
    """A run that pauses (API budget spent) is resumed, the same run, after 10, 20, 30, 30 s (doubling,
    capped); a finished run resets the back-off for the next pause."""
    runner.script = ["paused", "paused", "paused", "paused", "finished", "paused"]
    await gaps.request(at(1), "allocation")
    await until(lambda: ledger.runs[1].state == "finished", "the run finished")
    assert runner.executions == [(1, at(1))] * 5
    assert waits.delays == [10.0, 20.0, 30.0, 30.0]
    await gaps.request(at(2), "next")
    await until(lambda: len(waits.delays) == 5, "the next pause")
    assert waits.delays[-1] == 10.0


async def test_the_status_line_names_a_paused_run_its_reason_and_the_retry(
    gaps: GapReconciler, runner: FakeRunner, waits: Waits, running: asyncio.Event
) -> None:
    """While a paused run waits for its retry, the status line says which run, why, and when it retries."""
    assert gaps.status == "idle"
    runner.script = ["paused"]
    waits.hold = True
    await gaps.request(at(1), "allocation")
    await until(lambda: waits.delays == [10.0], "the pause")
    assert gaps.status in (
        "run 1 paused: the Salesforce API budget is spent, retry in 10 s",
        "run 1 paused: the Salesforce API budget is spent, retry in 9 s",
    )
    waits.release.set()
    await until(lambda: gaps.status == "idle", "the run finished")


async def test_the_daemons_unfinished_runs_are_resumed_at_start(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger
) -> None:
    """At start the runs the daemon requested and did not finish (left running by a crash, or paused) are
    resumed, earliest window first; other requesters' runs and finished runs are left alone."""
    crashed = ledger.add(Run("streaming", at(2), "running", {"after": "booking-7"}))
    paused = ledger.add(Run("streaming", at(1), "paused", {"after": "booking-3"}))
    admin = ledger.add(Run("admin-api", at(0), "paused"))
    done = ledger.add(Run("streaming", at(0), "finished", {"after": "booking-9"}))
    stop = asyncio.Event()
    task = asyncio.create_task(gaps.run(stop))
    await until(lambda: len(runner.executions) == 2, "both resumed")
    await until(lambda: ledger.runs[crashed].state == "finished", "the crashed run finished")
    assert runner.executions == [(paused, at(1)), (crashed, at(2))]
    assert ledger.runs[admin].state == "paused" and ledger.runs[done].state == "finished"
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_gap_runs_wait_for_the_admin_apis_run_to_end(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger, running: asyncio.Event
) -> None:
    """A reconciliation started through the admin API and a gap run never execute at the same time: the gap
    run waits its turn (and says so), then executes."""
    admin_gate = asyncio.Event()
    admin = TakingTurns(FakeRunner(ledger, gate=admin_gate), gaps.turn)
    options = ReconcileOptions(requested_by="admin-api")
    admin_id = await admin.start(options)
    admin_run = asyncio.create_task(admin.execute(admin_id, options))
    await until(gaps.turn.locked, "the admin run executing")
    await gaps.request(at(1), "lost")
    await until(lambda: gaps.status == "run 2 waiting for another reconciliation to end", "waiting")
    assert runner.executions == []
    admin_gate.set()
    await admin_run
    await until(lambda: ledger.runs[2].state == "finished", "the gap run finished")
    assert runner.executions == [(2, at(1))]


async def test_a_run_that_fails_does_not_stop_the_component(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger, running: asyncio.Event
) -> None:
    """A run that fails (a defect, closed as failed by the reconciler) is logged; the component goes on with
    the next request."""
    runner.script = [RuntimeError("a defect")]
    with capture_logs() as logs:
        await gaps.request(at(1), "first")
        await until(lambda: ledger.runs[1].state == "failed", "the failure")
        await gaps.request(at(2), "second")
        await until(lambda: ledger.runs.get(2, Run("x", None)).state == "finished", "the next run")
    assert [e["run_id"] for e in logs if e["event"] == "gaps.run_failed"] == [1]


async def test_a_run_in_hand_at_shutdown_may_finish_within_the_drain(
    gaps: GapReconciler, runner: FakeRunner, ledger: FakeLedger
) -> None:
    """Stopping the daemon while a gap run executes lets that run end within the drain time: it finishes
    and is reported, and the component then stops."""
    runner.gate = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(gaps.run(stop))
    with capture_logs() as logs:
        await gaps.request(at(1), "allocation")
        await until(lambda: runner.executions == [(1, at(1))], "executing")
        stop.set()
        for _ in range(10):  # the component sees the stop and drains
            await asyncio.sleep(0)
        assert not task.done()
        runner.gate.set()
        await asyncio.wait_for(task, 5)
    assert ledger.runs[1].state == "finished"
    assert [e["reason"] for e in logs if e["event"] == "inbound.reconciled"] == ["allocation"]


async def test_a_run_that_outlasts_the_drain_stays_to_resume_at_the_next_start(
    runner: FakeRunner, ledger: FakeLedger, waits: Waits
) -> None:
    """A gap run still executing when the drain time is over is cut short: the component stops, and the run
    stays unfinished in the ledger, so the next start resumes it."""
    gaps = GapReconciler(runner, ledger, settings=GapSettings(10.0, 30.0, drain_seconds=0.01), wait=waits)
    runner.gate = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(gaps.run(stop))
    await gaps.request(at(1), "lost")
    await until(lambda: runner.executions == [(1, at(1))], "executing")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert ledger.runs[1].state == "running" and not runner.executing
    assert [r.id for r in await ledger.unfinished_reconciliations("streaming")] == [1]
