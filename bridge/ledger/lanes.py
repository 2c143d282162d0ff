"""The ledger's one worker thread, shared fairly between orgs: one lane per org, served in turn.

Every ledger operation runs in one thread (SQLite has one writer; one thread keeps PostgreSQL's
transactions from interleaving on a pool). With many orgs that thread is the shared resource a backlog
in one org could monopolise: a plain FIFO puts a small org's claim behind every statement the big org and
the ingest queued before it. Here each org's operations wait in their own lane, and the thread takes one
operation from each lane with work in turn (round robin), so an org waits for at most one operation of
every other busy lane, whatever their backlogs.

The unscoped ledger's lane (the ingest, above all) serves every org: each org's new bookings wait in the
one ordered change stream until the ingest has written what came before them. It therefore takes every
other turn while it has work, however many org lanes are busy: the ingest keeps at least half the thread
during an import, and an org's claim waits for at most one ingest batch.

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
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

EVERY_LANE = "*"  # the unscoped ledger's lane (the ingest, the fleet, commands)
MAX_GROUP = 32  # writes sharing one transaction at most

# Runs jobs in one transaction: (True, result) or (False, exception) for each, in order; raises when the
# transaction itself failed.
GroupRunner = Callable[[list[Callable[[Any], Any]]], list[tuple[bool, Any]]]


@dataclass(slots=True)
class _Work:
    future: Future[Any]
    call: Callable[..., Any]
    write: bool  # a job taking a connection, which may share its transaction with the next writes


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
            favoured = self._favoured in self._lanes and (self._favoured_next or not self._turns)
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
            return work

    def _serve(self) -> None:
        while (work := self._take()) is not None:
            if not work.write:
                self._run_one(work)
                continue
            group = [work]
            while len(group) < MAX_GROUP and (more := self._take(writes_only=True)) is not None:
                group.append(more)
            self._run_writes(group)

    @staticmethod
    def _run_one(work: _Work) -> None:
        if not work.future.set_running_or_notify_cancel():
            return
        try:
            result = work.call()
        except BaseException as exc:  # handed to the awaiting caller, as a ThreadPoolExecutor does
            work.future.set_exception(exc)
        else:
            work.future.set_result(result)

    def _run_writes(self, group: list[_Work]) -> None:
        live = [w for w in group if w.future.set_running_or_notify_cancel()]
        if not live:
            return
        assert self._run_group is not None
        try:
            outcomes = self._run_group([w.call for w in live])
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
