"""The ledger's one worker thread, shared fairly between orgs: one lane per org, served in turn.

Every ledger operation runs in one thread (SQLite has one writer; one thread keeps PostgreSQL's
transactions from interleaving on a pool). With many orgs that thread is the shared resource a backlog
in one org could monopolise: a plain FIFO puts a small org's claim behind every statement the big org and
the ingest queued before it. Here each org's operations wait in their own lane, and the thread takes one
operation from each lane with work in turn (round robin), so an org waits for at most one operation of
every other busy lane, whatever their backlogs.

The unscoped ledger's lane (the ingest, above all) serves every org: each org's new bookings wait in the
read-ahead until the ingest has written them. It therefore takes every other turn while it has work, however
many org lanes are busy, but only while it has not used more of the thread's time than the org lanes
(FAVOURED_SLACK_SECONDS of slack): an ingest batch of an import runs for tens of milliseconds, an org's
claim for one, and turns counted alone would give the import nearly all of the thread while every org's
pushes queued behind it. So the ingest keeps about half the thread during an import, and an org's claim
waits for at most one ingest batch and its own turn among the org lanes.

Within a lane the order is kept (first submitted, first run), which is all a caller can rely on: every
caller awaits an operation's result before it submits one that depends on it.

Group commit. A write is submitted as a job that takes a connection (`submit_write`); when the thread
takes a write, it also takes the writes next in turn (up to MAX_GROUP, never a read, never out of the fair
order) and runs them in one transaction, each in its own savepoint, with one commit: one fsync for many
orgs' outcomes instead of one each. A job that fails rolls back to its savepoint and fails alone; a
failure of the transaction itself (the database away, the commit refused) fails every job in it, and none
of them is reported done before the commit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

EVERY_LANE = "*"  # the unscoped ledger's lane (the ingest, the fleet, commands)
MAX_GROUP = 32  # writes sharing one transaction at most
# The favoured lane may run this far ahead of the org lanes' time (and bank at most this much credit).
FAVOURED_SLACK_SECONDS = 0.005
FAVOURED_WINDOW_SECONDS = 0.5
# The favoured lane's share of the thread's time while org lanes wait too.
FAVOURED_SHARE = 0.5

# Runs jobs in one transaction: (True, result) or (False, exception) for each, in order; raises when the
# transaction itself failed.
GroupRunner = Callable[[list[Callable[[Any], Any]]], list[tuple[bool, Any]]]


@dataclass(slots=True)
class _Work:
    future: Future[Any]
    call: Callable[..., Any]
    write: bool  # a job taking a connection, which may share its transaction with the next writes
    favoured: bool = False  # taken from the favoured lane
    contended: bool = False  # other lanes had work when it was taken (its time counts in the balance)
    seconds: float = 0.0  # how long its call ran


class FairExecutor(Executor):
    """One worker thread; operations queued per lane and taken round robin across lanes."""

    def __init__(
        self,
        thread_name: str = "ledger_0",
        favoured: str | None = EVERY_LANE,
        run_group: GroupRunner | None = None,
    ) -> None:
        self._lanes: dict[str, deque[_Work]] = {}
        self._turns: deque[str] = deque()  # lanes with work (but the favoured one), in serving order
        self._favoured = favoured  # the lane that takes every other turn while it has work
        self._favoured_next = True
        # Thread time the favoured lane used beyond the other lanes' while both had work (clamped).
        self._favoured_debt = 0.0
        self._run_group = run_group
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=thread_name, daemon=True)
        self._started = False

    def lane(self, key: str) -> LaneExecutor:
        """An Executor whose operations wait in lane `key`."""
        return LaneExecutor(self, key)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue `fn` in the unscoped lane."""
        return self.submit_to(EVERY_LANE, fn, *args, **kwargs)

    def submit_to(self, key: str, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue `fn` in lane `key`; its future resolves when the worker thread ran it."""
        return self._queue(key, _Work(Future(), lambda: fn(*args, **kwargs), write=False))

    def submit_write(self, key: str, job: Callable[[Any], _T]) -> Future[_T]:
        """Queue a write job (called with an open transaction's connection) in lane `key`; its future
        resolves once the transaction it ran in committed."""
        if self._run_group is None:
            raise RuntimeError("this executor has no group runner for writes")
        return self._queue(key, _Work(Future(), job, write=True))

    def _queue(self, key: str, work: _Work) -> Future[Any]:
        with self._cv:
            if self._closing:
                raise RuntimeError("cannot schedule new ledger work after shutdown")
            if not self._started:
                self._thread.start()
                self._started = True
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = deque()
                if key != self._favoured:
                    self._turns.append(key)
            lane.append(work)
            self._cv.notify()
        return work.future

    def _take(self, *, writes_only: bool = False) -> _Work | None:
        """The next operation in turn (waiting for one unless `writes_only`); None once shut down with
        nothing left, or when `writes_only` and the next in turn is not a write."""
        with self._cv:
            while not self._turns and self._favoured not in self._lanes:
                if self._closing or writes_only:
                    return None
                self._cv.wait()
            due = self._favoured_next and self._favoured_debt <= FAVOURED_SLACK_SECONDS
            favoured = self._favoured in self._lanes and (due or not self._turns)
            contended = bool(self._turns) if favoured else self._favoured in self._lanes
            key = self._favoured if favoured else self._turns[0]
            assert key is not None
            lane = self._lanes[key]
            if writes_only and not lane[0].write:
                return None
            self._favoured_next = not favoured
            if not favoured:
                self._turns.popleft()
            work = lane.popleft()
            if not lane:
                del self._lanes[key]
            elif not favoured:
                self._turns.append(key)  # its next operation waits for every other lane's turn
            work.favoured, work.contended = favoured, contended
            return work

    def _charge(self, works: list[_Work]) -> None:
        """Count the thread time of operations that ran while the favoured lane and others both had work."""
        with self._cv:
            for work in works:
                if work.contended:
                    if work.favoured:
                        self._favoured_debt += work.seconds * (1.0 - FAVOURED_SHARE)
                    else:
                        self._favoured_debt -= work.seconds * FAVOURED_SHARE
            window = FAVOURED_WINDOW_SECONDS
            self._favoured_debt = min(max(self._favoured_debt, -window), window)

    def _serve(self) -> None:
        while (work := self._take()) is not None:
            if not work.write:
                self._run_one(work)
                self._charge([work])
                continue
            group = [work]
            while len(group) < MAX_GROUP and (more := self._take(writes_only=True)) is not None:
                group.append(more)
            self._run_writes(group)
            self._charge(group)

    @staticmethod
    def _run_one(work: _Work) -> None:
        if not work.future.set_running_or_notify_cancel():
            return
        started = time.monotonic()
        try:
            result = work.call()
        except BaseException as exc:  # handed to the awaiting caller, as a ThreadPoolExecutor does
            work.seconds = time.monotonic() - started
            work.future.set_exception(exc)
        else:
            work.seconds = time.monotonic() - started
            work.future.set_result(result)

    def _run_writes(self, group: list[_Work]) -> None:
        live = [w for w in group if w.future.set_running_or_notify_cancel()]
        if not live:
            return
        assert self._run_group is not None
        try:
            outcomes = self._run_group([_timed(w) for w in live])
        except BaseException as exc:  # the transaction failed: nothing of it happened
            for w in live:
                w.future.set_exception(exc)
            return
        for w, (done, value) in zip(live, outcomes, strict=True):
            if done:
                w.future.set_result(value)
            else:
                w.future.set_exception(value)

    def queued(self) -> dict[str, int]:
        """Operations waiting, by lane (for diagnostics and tests)."""
        with self._cv:
            return {key: len(lane) for key, lane in self._lanes.items()}

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run what is queued (unless `cancel_futures`), then stop the thread."""
        with self._cv:
            self._closing = True
            if cancel_futures:
                for lane in self._lanes.values():
                    for work in lane:
                        work.future.cancel()
                self._lanes.clear()
                self._turns.clear()
            self._cv.notify_all()
        if wait and self._started and self._thread is not threading.current_thread():
            self._thread.join()


def _timed(work: _Work) -> Callable[[Any], Any]:
    """A write job that records how long it ran (its share of the group's commit is not counted)."""

    def job(connection: Any) -> Any:
        started = time.monotonic()
        try:
            return work.call(connection)
        finally:
            work.seconds = time.monotonic() - started

    return job


class LaneExecutor(Executor):
    """One lane of a FairExecutor (what a scoped ledger submits to); shutting it down does nothing, the
    thread belongs to the FairExecutor."""

    def __init__(self, shared: FairExecutor, key: str) -> None:
        self._shared = shared
        self.key = key

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue `fn` in this lane."""
        return self._shared.submit_to(self.key, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The shared thread is stopped by its owner."""
