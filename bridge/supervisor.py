"""The daemon's supervisor: runs every component in one TaskGroup, tracks each one's life cycle, stops them
all on the first failure or on request, and gives up on a component that does not stop in time.

Life cycle of a component (`ComponentState`):

    STARTING  its task is created; a component with a start-up phase (`StartsUp`) stays here until it calls
              `ready()`, a plain one leaves as soon as it is entered
    RUNNING   ready to work
    DRAINING  stop was requested and the component has not returned yet
    STOPPED   it returned after stop was requested
    FAILED    it raised, ended without being asked to, or was cancelled (another component failed, or it
              was still DRAINING at the shutdown deadline)
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass

import structlog

from bridge.errors import FatalError

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0

Component = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StartsUp:
    """A component with a start-up phase: it is STARTING until it calls the `ready` callback it is given."""

    run: Callable[[asyncio.Event, Callable[[], None]], Awaitable[None]]


class ComponentState(enum.StrEnum):
    """Life cycle of a supervised component."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


_LIVE = (ComponentState.STARTING, ComponentState.RUNNING)


async def supervise(
    components: Mapping[str, Component | StartsUp],
    stop: asyncio.Event,
    states: MutableMapping[str, ComponentState],
) -> None:
    """Run every component in one TaskGroup; the first failure stops them all."""

    def ready(name: str) -> None:
        if states[name] is ComponentState.STARTING:  # a late ready() never undoes DRAINING or an end state
            states[name] = ComponentState.RUNNING

    async def guarded(name: str, component: Component | StartsUp) -> None:
        try:
            if isinstance(component, StartsUp):
                await component.run(stop, lambda: ready(name))
            else:
                ready(name)
                await component(stop)
        except BaseException:  # cancelled too: by another component's failure or at the deadline
            states[name] = ComponentState.FAILED
            raise
        if not stop.is_set():
            states[name] = ComponentState.FAILED
            raise FatalError(f"component {name} ended unexpectedly")
        states[name] = ComponentState.STOPPED

    async def drain_then_deadline() -> None:
        await stop.wait()
        for name, state in states.items():
            if state in _LIVE:
                states[name] = ComponentState.DRAINING
        await asyncio.sleep(SHUTDOWN_GRACE_SECONDS)
        draining = [n for n, s in states.items() if s is ComponentState.DRAINING]
        log.error("daemon.shutdown_deadline", still_draining=draining)
        raise FatalError(f"components did not stop within {SHUTDOWN_GRACE_SECONDS:.0f}s: {draining}")

    async with asyncio.TaskGroup() as tg:
        tasks = []
        for name, component in components.items():
            states[name] = ComponentState.STARTING
            tasks.append(tg.create_task(guarded(name, component), name=name))
        killer = tg.create_task(drain_then_deadline(), name="deadline")
        await asyncio.wait(tasks)
        killer.cancel()
