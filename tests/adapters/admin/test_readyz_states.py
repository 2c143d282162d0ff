"""/readyz and the components' life cycle: every state is reported, only all-RUNNING is ready."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from bridge.admin import AdminServer
from bridge.admin import server as server_module
from bridge.config import AdminSettings
from bridge.metrics import BridgeMetrics
from bridge.supervisor import ComponentState, StartsUp, supervise
from tests.adapters.admin.conftest import AUTH, Harness, Make


async def _readyz(h: Harness) -> tuple[int, dict[str, Any]]:
    response = await h.client.get("/readyz", headers=AUTH)
    return response.status, await response.json()


async def _until(check: Callable[[], bool]) -> None:
    """Let the supervised tasks run until `check` holds (bounded; the test's timeout is the backstop)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@pytest.mark.parametrize("state", ["starting", "draining", "failed", "stopped"])
async def test_readyz_is_503_and_names_the_state_of_a_component_not_running(make: Make, state: str) -> None:
    """A component STARTING, DRAINING, FAILED or STOPPED makes /readyz 503; the body shows every state."""
    h: Harness = await make()
    assert (await _readyz(h))[0] == 200
    h.states["push"] = state
    status, body = await _readyz(h)
    assert status == 503
    assert body["ready"] is False
    assert body["components"] == {"ingest": "running", "push": state, "admin": "running"}


async def test_readyz_follows_the_supervised_life_cycle(make: Make) -> None:
    """supervise's states reach /readyz: 503 while one starts, 200 once all run, 503 while draining."""
    h: Harness = await make()
    states = cast(dict[str, ComponentState], h.states)
    stop, started, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def plain(stop: asyncio.Event) -> None:
        await stop.wait()

    async def starts_up(stop: asyncio.Event, ready: Callable[[], None]) -> None:
        await started.wait()
        ready()
        await stop.wait()

    async def slow_to_drain(stop: asyncio.Event) -> None:
        await stop.wait()
        await release.wait()

    components = {"ingest": slow_to_drain, "push": StartsUp(starts_up), "admin": plain}
    run = asyncio.create_task(supervise(components, stop, states))
    await _until(lambda: states["admin"] is ComponentState.RUNNING)
    status, body = await _readyz(h)
    assert status == 503
    assert body["components"] == {"ingest": "running", "push": "starting", "admin": "running"}
    started.set()
    await _until(lambda: states["push"] is ComponentState.RUNNING)
    assert (await _readyz(h))[0] == 200
    stop.set()
    await _until(lambda: states["push"] is ComponentState.STOPPED)
    status, body = await _readyz(h)
    assert status == 503
    assert body["components"] == {"ingest": "draining", "push": "stopped", "admin": "stopped"}
    release.set()
    await asyncio.wait_for(run, 30)
    assert set(states.values()) == {ComponentState.STOPPED}


async def test_the_admin_server_is_starting_until_its_port_is_bound(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Supervised as StartsUp, the admin server is STARTING while its port is busy, RUNNING once bound."""
    monkeypatch.setattr(server_module, "BIND_RETRY_SECONDS", 0.05)
    h: Harness = await make()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    server: AdminServer[object] = AdminServer(
        AdminSettings(listen=f"127.0.0.1:{port}", token="t"),
        probe=h.server.probe,
        ledger=h.ledger,
        metrics=BridgeMetrics(),
        notify_pusher=h.pusher.notify,
    )
    states: dict[str, ComponentState] = {}
    stop = asyncio.Event()
    with capture_logs() as logs:
        run = asyncio.create_task(supervise({"admin": StartsUp(server.run)}, stop, states))
        await _until(lambda: any(e["event"] == "admin.bind_failed" for e in logs))
    assert states == {"admin": ComponentState.STARTING}
    holder.close()
    await asyncio.wait_for(server.listening.wait(), 30)
    assert states == {"admin": ComponentState.RUNNING}
    stop.set()
    await asyncio.wait_for(run, 30)
    assert states == {"admin": ComponentState.STOPPED}
