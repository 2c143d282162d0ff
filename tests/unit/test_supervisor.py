"""supervise: each component's state through its life cycle, on real asyncio tasks (no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from bridge import supervisor
from bridge.errors import FatalError
from bridge.supervisor import ComponentState, StartsUp, supervise

S = ComponentState


async def _turns(n: int = 5) -> None:
    """Let the other tasks run a few steps."""
    for _ in range(n):
        await asyncio.sleep(0)


class Gate:
    """A hand-written component: records the states it sees, waits for its gates, then stops on `stop`."""

    def __init__(self, states: dict[str, ComponentState], name: str) -> None:
        self.states, self.name = states, name
        self.seen_on_entry: ComponentState | None = None
        self.started = asyncio.Event()  # opens the start-up phase
        self.release = asyncio.Event()  # lets it return once stop is set

    async def plain(self, stop: asyncio.Event) -> None:
        """A component with no start-up phase."""
        self.seen_on_entry = self.states[self.name]
        await stop.wait()
        await self.release.wait()

    async def starts_up(self, stop: asyncio.Event, ready: Callable[[], None]) -> None:
        """A component that says ready once its start-up gate opens."""
        self.seen_on_entry = self.states[self.name]
        await self.started.wait()
        ready()
        await stop.wait()
        await self.release.wait()


async def test_full_life_cycle_of_a_component_with_a_start_up_phase() -> None:
    """STARTING until ready(), RUNNING, DRAINING from stop until it returns, then STOPPED."""
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    gate = Gate(states, "admin")
    run = asyncio.create_task(supervise({"admin": StartsUp(gate.starts_up)}, stop, states))
    await _turns()
    assert gate.seen_on_entry is S.STARTING and states == {"admin": S.STARTING}
    gate.started.set()
    await _turns()
    assert states == {"admin": S.RUNNING}
    stop.set()
    await _turns()
    assert states == {"admin": S.DRAINING}
    gate.release.set()
    await asyncio.wait_for(run, 5)
    assert states == {"admin": S.STOPPED}


async def test_a_plain_component_is_running_once_entered() -> None:
    """A component without a start-up phase is RUNNING as soon as its coroutine is entered."""
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    gate = Gate(states, "push")
    gate.release.set()
    run = asyncio.create_task(supervise({"push": gate.plain}, stop, states))
    await _turns()
    assert gate.seen_on_entry is S.RUNNING and states == {"push": S.RUNNING}
    stop.set()
    await asyncio.wait_for(run, 5)
    assert states == {"push": S.STOPPED}


async def test_every_state_is_starting_when_the_tasks_are_created() -> None:
    """Before any component runs, supervise has marked every one of them STARTING."""
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    stop.set()
    seen: list[dict[str, ComponentState]] = []

    async def first(stop: asyncio.Event) -> None:
        seen.append(dict(states))

    await asyncio.wait_for(supervise({"first": first, "second": first}, stop, states), 5)
    assert seen[0] == {"first": S.RUNNING, "second": S.STARTING}


async def test_a_late_ready_does_not_undo_draining() -> None:
    """A component that says ready only after stop was requested stays DRAINING."""
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    gate = Gate(states, "inbound")
    gate.release.set()
    run = asyncio.create_task(supervise({"inbound": StartsUp(gate.starts_up)}, stop, states))
    await _turns()
    stop.set()
    await _turns()
    assert states == {"inbound": S.DRAINING}
    gate.started.set()
    await asyncio.wait_for(run, 5)
    assert states == {"inbound": S.STOPPED}


async def test_a_failure_marks_it_failed_and_stops_the_rest() -> None:
    """A component that raises is FAILED; the others are cancelled and the error reaches the caller."""
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    gate = Gate(states, "push")

    async def broken(stop: asyncio.Event) -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(supervise({"ingest": broken, "push": gate.plain}, stop, states), 5)
    assert caught.group_contains(ValueError, match="boom")
    assert states["ingest"] is S.FAILED
    assert states["push"] is S.FAILED  # cancelled before it was asked to stop


async def test_a_component_that_ends_unasked_is_failed() -> None:
    """A component returning while stop is not set is FAILED and the daemon stops with a FatalError."""
    states: dict[str, ComponentState] = {}

    async def quits(stop: asyncio.Event) -> None:
        return None

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(supervise({"lock": quits}, asyncio.Event(), states), 5)
    assert caught.group_contains(FatalError, match="component lock ended unexpectedly")
    assert states == {"lock": S.FAILED}


async def test_the_shutdown_deadline_names_the_components_still_draining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the deadline, only the components that have not returned are named, in the log and the error."""
    monkeypatch.setattr(supervisor, "SHUTDOWN_GRACE_SECONDS", 0.05)
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    stuck, quick = Gate(states, "stuck"), Gate(states, "quick")
    quick.release.set()
    with capture_logs() as logs:
        run = asyncio.create_task(supervise({"stuck": stuck.plain, "quick": quick.plain}, stop, states))
        await _turns()
        stop.set()
        with pytest.raises(ExceptionGroup) as caught:
            await asyncio.wait_for(run, 5)
    assert caught.group_contains(FatalError, match=r"did not stop within .*\['stuck'\]")
    deadline = [e for e in logs if e["event"] == "daemon.shutdown_deadline"]
    assert deadline == [
        {"event": "daemon.shutdown_deadline", "still_draining": ["stuck"], "log_level": "error"}
    ]
    assert states == {"stuck": S.FAILED, "quick": S.STOPPED}
