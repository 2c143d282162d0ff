"""The daemon's supervisor: runs every component in one TaskGroup, tracks each one's life cycle, stops them
all on the first failure or on request, and gives up on a component that does not stop in time."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable

import structlog

from bridge.errors import FatalError

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0

Component = Callable[[asyncio.Event], Awaitable[None]]


class ComponentState(enum.StrEnum):
    """Life cycle of a supervised component."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


async def supervise(
    components: dict[str, Component], stop: asyncio.Event, states: dict[str, ComponentState]
) -> None:
    """Run every component in one TaskGroup; the first failure stops them all."""

    async def guarded(name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        states[name] = ComponentState.RUNNING
        try:
            await run(stop)
            states[name] = ComponentState.STOPPED
        except BaseException:
            states[name] = ComponentState.FAILED
            raise
        if not stop.is_set():
            raise FatalError(f"component {name} ended unexpectedly")

    async def deadline() -> None:
        await stop.wait()
        await asyncio.sleep(SHUTDOWN_GRACE_SECONDS)
        running = [n for n, s in states.items() if s is ComponentState.RUNNING]
        log.error("daemon.shutdown_deadline", still_running=running)
        raise FatalError(f"components did not stop within {SHUTDOWN_GRACE_SECONDS:.0f}s: {running}")

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(guarded(n, r), name=n) for n, r in components.items()]
        killer = tg.create_task(deadline(), name="deadline")
        await asyncio.wait(tasks)
        killer.cancel()
