"""The ledger's one worker thread, shared fairly between orgs: one lane per org, served in turn.

Every ledger operation runs in one thread (SQLite has one writer; one thread keeps PostgreSQL's
transactions from interleaving on a pool). With many orgs that thread is the shared resource a backlog
in one org could monopolise: a plain FIFO puts a small org's claim behind every statement the big org and
the ingest queued before it. Here each org's operations wait in their own lane, and the thread takes one
operation from each lane with work in turn (round robin), so an org waits for at most one operation of
every other busy lane, whatever their backlogs. The unscoped ledger (the ingest, the fleet) is one lane too.

Within a lane the order is kept (first submitted, first run), which is all a caller can rely on: every
caller awaits an operation's result before it submits one that depends on it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

EVERY_LANE = "*"  # the unscoped ledger's lane (the ingest, the fleet, commands)

_Work = tuple[Future[Any], Callable[[], Any]]


class FairExecutor(Executor):
    """One worker thread; operations queued per lane and taken round robin across lanes."""

    def __init__(self, thread_name: str = "ledger_0") -> None:
        self._lanes: dict[str, deque[_Work]] = {}
        self._turns: deque[str] = deque()  # lanes with work, in the order they are served
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
        future: Future[_T] = Future()
        with self._cv:
            if self._closing:
                raise RuntimeError("cannot schedule new ledger work after shutdown")
            if not self._started:
                self._thread.start()
                self._started = True
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = deque()
                self._turns.append(key)
            lane.append((future, lambda: fn(*args, **kwargs)))
            self._cv.notify()
        return future

    def _next(self) -> _Work | None:
        """The next operation in turn; None once shut down with nothing left."""
        with self._cv:
            while not self._turns:
                if self._closing:
                    return None
                self._cv.wait()
            key = self._turns.popleft()
            lane = self._lanes[key]
            work = lane.popleft()
            if lane:
                self._turns.append(key)  # its next operation waits for every other lane's turn
            else:
                del self._lanes[key]
            return work

    def _serve(self) -> None:
        while (work := self._next()) is not None:
            future, call = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting caller, as a ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)

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
                    for future, _ in lane:
                        future.cancel()
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
