"""The shared asyncio helpers: next item or stop, sleep or stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.aio import Interrupted, next_or_stop, sleep_or_stop


def _others() -> set[asyncio.Task[object]]:
    """Tasks of this loop that are still pending, other than the running test."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def test_item_first_returns_the_item_and_leaves_nothing_pending() -> None:
    """An item that arrives before stop is returned, and the stop waiter is gone."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    stop = asyncio.Event()
    queue.put_nowait("a")
    assert await next_or_stop(queue.get(), stop) == "a"
    await asyncio.sleep(0)  # the cancelled stop waiter finishes on the loop's next turn
    assert not _others()


async def test_stop_first_returns_stopped_and_leaves_the_item_in_the_source() -> None:
    """Stop before any item: STOPPED, the getter is cancelled, and a later item stays in the queue."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    stop = asyncio.Event()
    waiting = asyncio.create_task(next_or_stop(queue.get(), stop))
    await asyncio.sleep(0)
    stop.set()
    assert await waiting is Interrupted.STOPPED
    assert not _others()
    queue.put_nowait("late")
    assert queue.get_nowait() == "late"


async def test_both_ready_the_item_wins() -> None:
    """When the item and stop are ready at once, the item is returned (nothing is taken and dropped)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    stop = asyncio.Event()
    queue.put_nowait("a")
    stop.set()
    assert await next_or_stop(queue.get(), stop) == "a"
    assert queue.empty()
    await asyncio.sleep(0)
    assert not _others()


async def test_cancelling_the_caller_cancels_both_waiters() -> None:
    """A cancelled caller leaves no pending task behind, and the queue keeps its next item."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    stop = asyncio.Event()
    waiting = asyncio.create_task(next_or_stop(queue.get(), stop))
    await asyncio.sleep(0)
    assert len(_others()) == 3  # the caller, its getter and its stopper
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not _others()
    queue.put_nowait("kept")
    assert queue.get_nowait() == "kept"


async def test_timeout_returns_timed_out() -> None:
    """Neither item nor stop within the timeout: TIMED_OUT, and both waiters are cancelled."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    assert await next_or_stop(queue.get(), asyncio.Event(), within=0.01) is Interrupted.TIMED_OUT
    assert not _others()


async def test_an_error_of_the_item_source_propagates() -> None:
    """An item source that fails is not mistaken for stop: its error reaches the caller."""

    async def broken() -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await next_or_stop(broken(), asyncio.Event())


async def test_an_async_iterator_is_closed_cleanly_on_stop() -> None:
    """Stop while waiting on `anext` of an async generator: STOPPED, and the generator saw the cancel."""
    seen: list[str] = []

    async def items() -> AsyncIterator[str]:
        try:
            await asyncio.Event().wait()
            yield "never"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    stop = asyncio.Event()
    stop.set()
    assert await next_or_stop(anext(items()), stop) is Interrupted.STOPPED
    assert seen == ["cancelled"]
    assert not _others()


async def test_sleep_or_stop_wakes_on_stop_and_says_so() -> None:
    """A set stop ends the sleep at once and returns True; a timeout returns False."""
    stop = asyncio.Event()
    assert await sleep_or_stop(stop, 0.01) is False
    stop.set()
    assert await sleep_or_stop(stop, 3600) is True
    assert not _others()
