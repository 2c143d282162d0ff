"""Gap reconciliations: the runs the daemon asks for itself, made durable, run one at a time, resumed.

When the change stream may have missed something (a quiet channel's gap, a lost replay window, an exhausted
delivered-event allocation), `GapReconciler.request(since, reason)` opens a reconciliation run by change time
in the ledger and returns at once: the stream does not wait for the run, and a kill -9 right after cannot
forget the window, because start-up resumes every unfinished run the daemon requested itself.

`GapReconciler.run` executes the runs one at a time and never beside another reconciliation: the admin API's
runs take the same turn (`TakingTurns`). A run that pauses (API budget spent, Salesforce or the ledger away)
is resumed after a back-off that starts at the API budget's recheck interval. Requests that arrive while a run
executes wait for the next one; a waiting run that has checked nothing yet covers every later window from its
`since` on, so the other waiting runs with nothing checked are closed as merged into the earliest one. A run
that has checked something is never widened: what it checked before a later request would not be checked
again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog

from bridge.aio import Interrupted, next_or_stop, sleep_or_stop
from bridge.errors import TransientError
from bridge.pipeline.reconcile import ReconcileOptions, ReconcileSummary
from bridge.records.ledger import JsonObject, ReconciliationRun

log = structlog.get_logger(__name__)

REQUESTED_BY = "streaming"  # `requested_by` of every run the daemon asks for itself
RESUMED = "resumed_at_start"  # the reason of a run found unfinished at start-up
Wait = Callable[[asyncio.Event, float], Awaitable[bool]]  # sleep, unless stopped; True when stopped


class GapRunner(Protocol):
    """Opens and executes reconciliation runs (bridge.pipeline.reconcile.Reconciler)."""

    async def start(self, options: ReconcileOptions) -> int:
        """Open a run, or resume the unfinished run with the same scope; its id."""
        ...

    async def execute(self, run_id: int, options: ReconcileOptions) -> ReconcileSummary:
        """Run it to its end or until it pauses."""
        ...


class GapLedger(Protocol):
    """The ledger calls the gap reconciler needs (bridge.ledger.repository.Ledger)."""

    async def get_reconciliation(self, run_id: int) -> ReconciliationRun | None:
        """One run, or None."""
        ...

    async def finish_reconciliation(self, run_id: int, state: str, summary: JsonObject) -> None:
        """Close a run."""

    async def unfinished_reconciliations(self, requested_by: str) -> list[ReconciliationRun]:
        """Runs by this requester that stopped before their last chunk (paused, or left running)."""
        ...


@dataclass(frozen=True, slots=True)
class GapSettings:
    """Back-off of paused runs, and the drain at shutdown."""

    retry_base_seconds: float = 300.0  # the daemon passes `salesforce.api_budget_recheck_seconds`
    retry_max_seconds: float = 2400.0
    drain_seconds: float = 10.0  # at shutdown the run in hand may end in this (inside the supervisor's grace)


@dataclass
class _Gap:
    """One window to reconcile: its run, since when, why, and whether it has checked anything yet."""

    run_id: int
    since: datetime
    reasons: list[str] = field(default_factory=list)
    fresh: bool = True  # nothing checked yet: it may absorb the windows of later requests


class GapReconciler:
    """The supervised component that runs the daemon's own gap reconciliations until each is finished."""

    def __init__(
        self,
        runner: GapRunner,
        ledger: GapLedger,
        *,
        settings: GapSettings = GapSettings(),
        wait: Wait = sleep_or_stop,
    ) -> None:
        self._runner = runner
        self._ledger = ledger
        self._settings = settings
        self._wait = wait
        self._waiting: dict[int, _Gap] = {}  # by run id; the executing one is not here
        self._current: _Gap | None = None
        self._wake = asyncio.Event()
        self._delay = settings.retry_base_seconds
        self._retry_at: float | None = None  # time.monotonic() of the next attempt after a pause
        self._paused_run, self._paused_reason = 0, ""
        self._phase = "idle"  # of the executing run: "turn" (waiting for it) or "running"
        self.turn = asyncio.Lock()  # held while any reconciliation executes (gap runs and the admin API's)
        self.finished = 0

    @property
    def status(self) -> str:
        """One line for the status output: idle, running, waiting its turn, or paused until a retry."""
        gap = self._current
        if gap is None and not self._waiting:
            return "idle"
        others = len(self._waiting) - (1 if gap is None else 0)
        more = f"; {others} more waiting" if others else ""
        if gap is not None:
            if self._phase == "turn":
                return f"run {gap.run_id} waiting for another reconciliation to end{more}"
            return f"run {gap.run_id} running (changes since {gap.since.isoformat()}){more}"
        if self._retry_at is not None:
            left = max(0, math.ceil(self._retry_at - time.monotonic()))
            return f"run {self._paused_run} paused: {self._paused_reason}, retry in {left} s{more}"
        return f"run {min(self._waiting.values(), key=_order).run_id} waiting{more}"

    async def request(self, since: datetime, reason: str) -> None:
        """Make the window durable (a run opened in the ledger), then return; the run executes later."""
        covering = self._covering(since)
        if covering is not None:
            covering.reasons.append(reason)
            log.info("gaps.request_merged", run_id=covering.run_id, since=since.isoformat(), reason=reason)
            return
        run_id = await self._runner.start(_options(since))
        known = self._waiting.get(run_id)
        if known is not None:
            known.reasons.append(reason)
        else:
            self._waiting[run_id] = _Gap(run_id, since, [reason], fresh=await self._unchecked(run_id))
        log.info("gaps.requested", run_id=run_id, since=since.isoformat(), reason=reason)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Resume the unfinished runs, then execute runs as they are requested, until `stop` is set."""
        if not await self._resume_unfinished(stop):
            return
        while not stop.is_set():
            gap = await self._next()
            if gap is None:
                self._wake.clear()
                await next_or_stop(self._wake.wait(), stop)
                continue
            if not await self._attempt(gap, stop):
                break
        log.info("gaps.stopped", finished=self.finished, waiting=sorted(self._waiting))

    # ------------------------------------------------------------------------------ the queue

    def _covering(self, since: datetime) -> _Gap | None:
        """A waiting run that has checked nothing yet and starts no later: it covers this window too."""
        fresh = [g for g in self._waiting.values() if g.fresh and g.since <= since]
        return min(fresh, key=_order) if fresh else None

    async def _unchecked(self, run_id: int) -> bool:
        """True when the run has stored no progress (a resumed run may have; unknown counts as checked)."""
        try:
            run = await self._ledger.get_reconciliation(run_id)
        except TransientError:
            return False
        return run is not None and not run.summary

    async def _resume_unfinished(self, stop: asyncio.Event) -> bool:
        """Queue the daemon's own runs left paused or running; False when stopped first."""
        delay = self._settings.retry_base_seconds
        while True:
            try:
                runs = await self._ledger.unfinished_reconciliations(REQUESTED_BY)
                break
            except TransientError as exc:
                log.warning("gaps.unfinished_unread", error_type=type(exc).__name__, retry_in=delay)
            if await self._wait(stop, delay):
                return False
            delay = min(delay * 2, self._settings.retry_max_seconds)
        for run in runs:
            since = _changed_since(run)
            if since is None or run.id in self._waiting:
                continue
            self._waiting[run.id] = _Gap(run.id, since, [RESUMED], fresh=not run.summary)
            log.warning("gaps.resumed_at_start", run_id=run.id, state=run.state, since=since.isoformat())
        return True

    async def _next(self) -> _Gap | None:
        """The waiting run with the earliest window; if it has checked nothing yet, the other such runs
        merge into it (closed in the ledger as merged: their windows are inside its window)."""
        if not self._waiting:
            return None
        gap = min(self._waiting.values(), key=_order)
        del self._waiting[gap.run_id]
        if not gap.fresh:
            return gap
        for other in [g for g in self._waiting.values() if g.fresh]:
            message = f"merged into run {gap.run_id}: its window is inside that run's window"
            try:
                await self._ledger.finish_reconciliation(other.run_id, "finished", {"message": message})
            except TransientError:
                continue  # it stays waiting and executes on its own
            del self._waiting[other.run_id]
            gap.reasons += other.reasons
            log.info("gaps.runs_merged", run_id=gap.run_id, merged=other.run_id)
        return gap

    # ------------------------------------------------------------------------------ one attempt

    async def _attempt(self, gap: _Gap, stop: asyncio.Event) -> bool:
        """Execute (or resume) one run in its turn; a pause waits out the back-off. False when stopped."""
        self._current, self._retry_at = gap, None
        execution = asyncio.ensure_future(self._execute(gap))
        try:
            outcome = await next_or_stop(asyncio.shield(execution), stop)
            if outcome is Interrupted.STOPPED:  # draining: the run in hand may still end within the grace
                outcome = await asyncio.wait_for(asyncio.shield(execution), self._settings.drain_seconds)
        except TimeoutError:
            outcome = Interrupted.STOPPED
        finally:
            if not execution.done():
                execution.cancel()
                await asyncio.gather(execution, return_exceptions=True)
            self._current, self._phase = None, "idle"
        if outcome is Interrupted.STOPPED:
            self._requeue(gap)
            log.info("gaps.run_interrupted", run_id=gap.run_id, reason="stopping: resumed at the next start")
            return False
        if outcome is None or outcome is Interrupted.TIMED_OUT:  # ended (finished, or failed for good)
            self._delay = self._settings.retry_base_seconds
            return True
        gap.fresh = False
        self._requeue(gap)
        self._paused_run, self._paused_reason = gap.run_id, outcome
        delay, self._retry_at = self._delay, time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._settings.retry_max_seconds)
        log.warning("gaps.run_paused", run_id=gap.run_id, reason=outcome, retry_in=delay)
        stopped = await self._wait(stop, delay)
        self._retry_at = None
        return not stopped

    def _requeue(self, gap: _Gap) -> None:
        """Back to waiting (joining a waiting entry of the same run, should `start` have resumed that one)."""
        known = self._waiting.setdefault(gap.run_id, gap)
        if known is not gap:
            known.reasons += gap.reasons
            known.fresh = known.fresh and gap.fresh

    async def _execute(self, gap: _Gap) -> str | None:
        """Run it once; the reason it paused, or None when it ended (finished, or failed for good)."""
        options = _options(gap.since)
        self._phase = "turn"
        async with self.turn:
            self._phase = "running"
            try:
                gap.run_id = await self._runner.start(options)  # a paused run is resumed, not restarted
                summary = await self._runner.execute(gap.run_id, options)
            except TransientError as exc:  # the ledger away while opening or closing the run
                return f"unavailable ({type(exc).__name__})"
            except Exception as exc:  # a defect in one run must not stop the stream's other gaps
                log.error(
                    "gaps.run_failed", run_id=gap.run_id, error_type=type(exc).__name__, error=str(exc)[:300]
                )
                return None
        if summary.state == "paused":
            return _pause_reason(summary.message)
        self.finished += 1
        for reason in gap.reasons:
            log.warning("inbound.reconciled", run_id=gap.run_id, reason=reason, state=summary.state)
        return None


class TakingTurns:
    """A reconciliation runner whose runs take the same turn as the gap runs (the admin API's runner)."""

    def __init__(self, runner: GapRunner, turn: asyncio.Lock) -> None:
        self._runner = runner
        self._turn = turn

    async def start(self, options: ReconcileOptions) -> int:
        """Open (or resume) the run at once: the caller learns its id."""
        return await self._runner.start(options)

    async def execute(self, run_id: int, options: ReconcileOptions) -> ReconcileSummary:
        """Wait for the turn (a gap run may be executing), then execute."""
        async with self._turn:
            return await self._runner.execute(run_id, options)


def _options(since: datetime) -> ReconcileOptions:
    """A targeted reconciliation by change time from `since` (the run's scope, which resumes it)."""
    return ReconcileOptions(changed_since=since, requested_by=REQUESTED_BY)


def _order(gap: _Gap) -> tuple[datetime, int]:
    return gap.since, gap.run_id


def _changed_since(run: ReconciliationRun) -> datetime | None:
    """The window's start from a stored scope (None for a run not by change time)."""
    value = dict(run.scope).get("changed_since")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _pause_reason(message: str | None) -> str:
    """The short reason from a paused run's message ("paused: <reason> (<error>); ...")."""
    text = (message or "").removeprefix("paused: ")
    return text.split(" (", 1)[0] or "paused"
