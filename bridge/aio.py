"""Small asyncio helpers the long-lived loops share: "the next item, or stop" and "sleep, unless stopped"."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(enum.Enum):
    """Why `next_or_stop` returned without an item."""

    STOPPED = "stopped"
    TIMED_OUT = "timed_out"


async def next_or_stop(
    next_item: Awaitable[T], stop: asyncio.Event, within: float | None = None
) -> T | Interrupted:
    """Await `next_item` until `stop` is set or `within` seconds pass, whichever comes first.

    An item that is ready when stop is too wins: the caller handles it and sees stop on its next turn. A
    getter that loses is cancelled and awaited, so nothing stays pending, also when the caller itself is
    cancelled; an item source that ends (StopAsyncIteration) while being cancelled counts as cancelled, any
    other error it raises then propagates.
    """
    getter = asyncio.ensure_future(next_item)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({getter, stopper}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        await _cancel_and_settle({getter, stopper})
        raise
    if getter in done:
        # Not awaited: an await here would be a point where a cancellation could drop the item in hand,
        # and a cancelled stop.wait() has nothing to clean up (it finishes on the loop's next turn).
        stopper.cancel()
        return getter.result()
    await _cancel_and_settle({getter, stopper})
    _raise_unexpected(getter)
    return Interrupted.STOPPED if stopper in done else Interrupted.TIMED_OUT


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, waking early when `stop` is set; True when stop is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def _cancel_and_settle(futures: set[asyncio.Future[Any]]) -> None:
    """Cancel the futures still pending and wait until each has finished."""
    pending = {f for f in futures if not f.done()}
    for future in pending:
        future.cancel()
    if pending:
        await asyncio.wait(pending)
    for future in futures:
        if not future.cancelled():
            future.exception()  # retrieved here, so asyncio never reports it as unobserved


def _raise_unexpected(loser: asyncio.Future[Any]) -> None:
    """Re-raise what a cancelled loser raised instead of its cancellation, unless the source simply ended."""
    if loser.cancelled():
        return
    error = loser.exception()
    if error is not None and not isinstance(error, StopAsyncIteration):
        raise error
